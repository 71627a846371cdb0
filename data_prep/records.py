"""What every conversion part does with its records, whatever the source: decide each
record's split, write it straight into the part's shards, and keep small running sums.

Source-specific code (water, PDBbind) supplies a *converter*: a picklable function that
turns one task into a stream of `Converted` records and `Skipped` entries. A conversion
*part* (one process; see `data_prep.pipeline`) runs it over its tasks and keeps only a
`PartSummary`: per split its shards (`mpnn.graph_format.tfrecord.ShardInfo`), the
skipped entries, per-source counts, notes, totals and the `TargetSums` of the train
split. `merge_summaries` adds up the parts' summaries and `build_manifest` turns them
into the `mpnn.graph_format.manifest.Manifest`.

Splits are decided per record by `SplitRule`, with no global state, so that the same
records land in the same splits whatever the number of parts.
"""

from __future__ import annotations

import collections
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

from mpnn.errors import UserError
from mpnn.graph_format import manifest as mf
from mpnn.graph_format.features import SCHEMA_VERSION, features_to_json
from mpnn.graph_format.shards import shard_file_name
from mpnn.graph_format.tfrecord import ShardInfo, ShardWriter, sha256_of

SPLITS = mf.SPLITS


class Converted(NamedTuple):
    """One graph, serialised.

    Attributes:
        source: the input file it came from.
        index: its position in that file (frame, row or record).
        position: its global input position: the number of structures of all inputs
            before it, in input order, skipped ones included (see `SplitRule`).
        record_id: the record's id (``record_id`` feature); seeds its split.
        example: the serialised `tf.train.Example`.
        target: the regression target (units in the manifest).
        atom_type_counts: number of atoms of each type of the atom vocabulary
            (`atom_type_counts`).
        note: what the converter had to repair, if anything (counted in the manifest).
        n_atom, n_bond: size of the graph (summed into the manifest's totals).
        group: the record's group, if the data set has one (water: ``n_waters``), for
            `SplitRule.test_groups`.
    """

    source: str
    index: int
    position: int
    record_id: str
    example: bytes
    target: float
    atom_type_counts: tuple[int, ...]
    note: str | None = None
    n_atom: int = 0
    n_bond: int = 0
    group: int | None = None


def atom_type_counts(atom: np.ndarray, n_types: int) -> tuple[int, ...]:
    """`Converted.atom_type_counts` of a graph whose ``atom [N]`` holds type indices into a
    vocabulary of `n_types`."""
    return tuple(np.bincount(atom, minlength=n_types).tolist())


# An input that could not be converted, and why: the manifest's own entry, yielded by the
# converters as they meet it.
Skipped = mf.SkippedEntry


@dataclass(frozen=True)
class DatasetSpec:
    """What a source contributes to the manifest besides its records.

    Attributes:
        check: ``check(summary) -> warnings`` about the converted set as a whole (e.g.
            energies implausible in their stated unit), run once on the merged summary; the
            warnings are logged and kept in the manifest. Picklable (a module-level function
            or a `functools.partial` of one): the plan is sent to MPI ranks.
    """

    kind: str
    target: str
    target_units: str
    extensive: bool
    features: tuple[str, ...]
    vocab: dict[str, list[str]]
    extra: dict[str, Any] = field(default_factory=dict)
    check: Callable[["PartSummary"], list[str]] | None = None


class StrictModeError(UserError, RuntimeError):
    """Raised in strict mode at the first skipped input."""


class NothingConvertedError(UserError, RuntimeError):
    """Raised when no input could be converted."""


@dataclass(frozen=True)
class SplitRule:
    """The split of one record, from its global input position and its id alone.

    - `test_groups` (LO, HI): records whose group (water: ``n_waters``) lies in LO..HI
      (inclusive) are test, e.g. to test extrapolation to larger clusters; the other
      records are split by the rules below;
    - `test_ids` (PDBbind core / year splits): ids in it are test;
    - `test_sources`: records read from these files (real paths) are test, e.g. a set made
      apart from the training data (``mpnn-prep-water --test-inputs``);
    - else with `test_every` K: the structure at global input position p is test iff
      p % K == 0 (positions count every input structure, skipped ones too);
    - the other records go to train / valid in the ratio ``fractions[0] : fractions[1]``
      by `uniform`, a seeded hash of the record id; without `test_ids` or `test_every`,
      all three splits by `fractions` (normalised).
    """

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    test_every: int | None = None
    test_ids: frozenset[str] | None = None
    test_groups: tuple[int, int] | None = None
    test_sources: frozenset[str] | None = None

    def __post_init__(self) -> None:
        weights = np.asarray(self.fractions, dtype=float)
        if weights.shape != (3,) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"split fractions must be three non-negative numbers, got {self.fractions}")
        if self.test_every is not None and self.test_every < 2:
            raise ValueError(f"--test-every must be at least 2, got {self.test_every}")
        if self._held_out and not weights[0] + weights[1] > 0:
            raise ValueError(f"train and valid fractions must not both be zero, got {self.fractions}")
        if self.test_groups is not None and not self.test_groups[0] <= self.test_groups[1]:
            raise ValueError(f"--test-groups: LO must not exceed HI, got {self.test_groups[0]}-{self.test_groups[1]}")

    def uniform(self, record_id: str) -> float:
        """A number in [0, 1) from the seed and `record_id` (blake2b), the same on every machine."""
        digest = hashlib.blake2b(f"{self.seed}\0{record_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") / 2**64

    @property
    def _held_out(self) -> bool:
        """Whether a rule other than the fractions picks the test set."""
        return bool(self.test_every) or self.test_ids is not None or self.test_sources is not None

    def split_of(self, position: int, record_id: str, group: int | None = None, source: str = "") -> str:
        """The split of the record at global input `position` with `record_id`, `group`
        (needed with `test_groups`) and read from `source` (its real path)."""
        train, valid, test = self.fractions
        if self.test_groups is not None:
            if group is None:
                raise ValueError(f"{record_id}: --test-groups needs the record's group, which this data lacks")
            if self.test_groups[0] <= group <= self.test_groups[1]:
                return "test"
        if self.test_ids is not None and record_id in self.test_ids:
            return "test"
        if self.test_sources is not None and source in self.test_sources:
            return "test"
        if self.test_every and position % self.test_every == 0:
            return "test"
        u = self.uniform(record_id)
        if self._held_out:
            return "valid" if u < valid / (train + valid) else "train"
        total = train + valid + test
        return "train" if u < train / total else "valid" if u < (train + valid) / total else "test"


_SUMS_BLOCK = 4096


@dataclass
class TargetSums:
    """Running sums of the target over records, enough for `statistics` to be exact:
    count, sum, sum of squares, min, max and the normal equations ``X^T X``, ``X^T y``,
    ``y^T y`` of the design ``X = [atom type counts, 1]`` (one row per record)."""

    n_types: int
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    minimum: float = np.inf
    maximum: float = -np.inf
    xtx: np.ndarray | None = None  # [T + 1, T + 1]
    xty: np.ndarray | None = None  # [T + 1]

    def __post_init__(self) -> None:
        if self.xtx is None:
            self.xtx = np.zeros((self.n_types + 1, self.n_types + 1))
            self.xty = np.zeros(self.n_types + 1)
        # Added records not yet in the sums: one matrix product per block of them costs
        # far less than an outer product per record.
        self._targets: list[float] = []
        self._counts: list[Sequence[int]] = []

    def add(self, target: float, counts: Sequence[int]) -> None:
        self._targets.append(target)
        self._counts.append(counts)
        if len(self._targets) >= _SUMS_BLOCK:
            self.flush()

    def flush(self) -> None:
        """Add the pending records to the sums."""
        if not self._targets:
            return
        y = np.asarray(self._targets, dtype=np.float64)
        x = np.ones((len(y), self.n_types + 1))
        x[:, :-1] = np.asarray(self._counts, dtype=np.float64).reshape(len(y), self.n_types)
        self.count += len(y)
        self.total += float(y.sum())
        self.squares += float(y @ y)
        self.minimum, self.maximum = min(self.minimum, float(y.min())), max(self.maximum, float(y.max()))
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self._targets, self._counts = [], []

    @property
    def records(self) -> int:
        """Records added so far."""
        return self.count + len(self._targets)

    def merge(self, other: "TargetSums") -> None:
        self.flush()
        other.flush()
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        self.minimum, self.maximum = min(self.minimum, other.minimum), max(self.maximum, other.maximum)
        self.xtx += other.xtx
        self.xty += other.xty

    def statistics(self, atom_vocab: Sequence[str]) -> mf.TargetStats:
        """Statistics of the target over the records added.

        ``per_atom_type_mean`` and ``graph_offset`` are the least-squares (minimum-norm)
        solution of ``target ~ sum_t count_t * mean_t + offset``, solved on the normal
        equations (same minimum-norm solution: ``X^T X`` has the null space and row space
        of ``X``): the model starts from it and only learns the remainder, whose spread per
        graph is ``residual_std``. The offset matters: water-cluster energies are close to
        linear in the size *with* an intercept, which a sum of per-atom terms alone cannot
        represent.
        """
        self.flush()
        if not self.count:
            raise ValueError("no records to compute target statistics from")
        n = self.count
        mean = self.total / n
        # Rank-deficient designs are the rule (water: H = 2 O): singular values of X^T X
        # below 1e-10 of the largest are its null space, not data.
        solution, *_ = np.linalg.lstsq(self.xtx, self.xty, rcond=1e-10)
        column_sums = self.xtx[:, -1]  # X^T 1: per-type atom totals, then n
        residual_mean = (self.total - solution @ column_sums) / n
        residual_squares = self.squares - 2 * solution @ self.xty + solution @ self.xtx @ solution
        # The same fit without the offset: per-type reference energies whose sum is
        # size-extensive, the baseline of the models that must extrapolate in size.
        extensive, *_ = np.linalg.lstsq(self.xtx[:-1, :-1], self.xty[:-1], rcond=1e-10)
        return mf.TargetStats(
            count=int(n),
            mean=float(mean),
            std=float(np.sqrt(max(self.squares / n - mean * mean, 0.0))),
            min=float(self.minimum),
            max=float(self.maximum),
            per_atom_type_mean={t: float(m) for t, m in zip(atom_vocab, solution[:-1])},
            graph_offset=float(solution[-1]),
            residual_std=float(np.sqrt(max(residual_squares / n - residual_mean**2, 0.0))),
            atoms_per_graph_mean=float(column_sums[:-1].sum() / n),
            per_atom_type_reference={t: float(m) for t, m in zip(atom_vocab, extensive)},
        )


@dataclass
class PerAtomTargets:
    """The target divided by the record's atom count, over every converted record of every
    split: count, sum, min and max (target units per atom)."""

    count: int = 0
    total: float = 0.0
    minimum: float = np.inf
    maximum: float = -np.inf

    def add(self, target: float, n_atom: int) -> None:
        if n_atom > 0:
            value = target / n_atom
            self.count, self.total = self.count + 1, self.total + value
            self.minimum, self.maximum = min(self.minimum, value), max(self.maximum, value)

    def merge(self, other: "PerAtomTargets") -> None:
        self.count, self.total = self.count + other.count, self.total + other.total
        self.minimum, self.maximum = min(self.minimum, other.minimum), max(self.maximum, other.maximum)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


@dataclass
class PartSummary:
    """What one conversion part reports (small: no records).

    Attributes:
        shards: per split, the part's finished shards.
        per_source: converted records per input file.
        process: facts about the process that ran the part (pid, CPU seconds, peak RSS
            in KiB, whether TensorFlow was imported).
        per_atom: the target per atom over all the part's records (`DatasetSpec.check`).
    """

    part: int
    train_sums: TargetSums
    shards: dict[str, list[ShardInfo]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    per_source: collections.Counter = field(default_factory=collections.Counter)
    notes: collections.Counter = field(default_factory=collections.Counter)
    converted: int = 0
    atoms: int = 0
    edges: int = 0
    process: dict[str, Any] = field(default_factory=dict)
    per_atom: PerAtomTargets = field(default_factory=PerAtomTargets)


class PartWriter:
    """The shards of one part: per split `shards_per_split` files, opened when their first
    record arrives, records dealt round-robin over them (sizes differ by at most one)."""

    def __init__(
        self, out_dir: str, shards_per_split: int, compression: str, part: int | None
    ) -> None:
        self.out_dir, self.shards_per_split, self.compression, self.part = out_dir, shards_per_split, compression, part
        self._writers: dict[tuple[str, int], ShardWriter] = {}
        self._count = collections.Counter()

    def write(self, split: str, example: bytes) -> None:
        shard = self._count[split] % self.shards_per_split
        self._count[split] += 1
        writer = self._writers.get((split, shard))
        if writer is None:
            name = shard_file_name(split, shard, self.shards_per_split, self.compression, self.part)
            writer = self._writers[(split, shard)] = ShardWriter(os.path.join(self.out_dir, name), self.compression)
        writer.write(example)

    def close(self) -> dict[str, list[ShardInfo]]:
        """Finish every shard; returns them per split, in shard order. If one cannot be
        finished (a full disk), none of the part's shards is left and the error is raised."""
        shards: dict[str, list[ShardInfo]] = {}
        try:
            for key in sorted(self._writers):
                shards.setdefault(key[0], []).append(self._writers[key].close())
                del self._writers[key]  # finished: abort() leaves it
        except BaseException:
            self.abort()
            for info in (info for infos in shards.values() for info in infos):
                os.remove(os.path.join(self.out_dir, info.file))
            raise
        return shards

    def abort(self) -> None:
        """Drop every unfinished shard (no file is left behind)."""
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()


def merge_summaries(parts: Iterable[PartSummary], n_types: int) -> PartSummary:
    """One summary of all `parts` (shards in part order; part -1)."""
    merged = PartSummary(-1, TargetSums(n_types))
    for part in sorted(parts, key=lambda p: p.part):
        merged.train_sums.merge(part.train_sums)
        for split, shards in part.shards.items():
            merged.shards.setdefault(split, []).extend(shards)
        merged.skipped.extend(part.skipped)
        merged.per_source.update(part.per_source)
        merged.notes.update(part.notes)
        merged.converted += part.converted
        merged.atoms += part.atoms
        merged.edges += part.edges
        merged.per_atom.merge(part.per_atom)
    return merged


def build_manifest(
    spec: DatasetSpec,
    summary: PartSummary,
    sources: Sequence[str],
    compression: str,
    options: dict[str, Any],
    ranks: int = 1,
    warnings: Sequence[str] = (),
) -> mf.Manifest:
    """The manifest of a data set from the merged `summary` of its parts and the `warnings`
    of `DatasetSpec.check`.

    Skipped entries are listed in input order (file in `sources`, then index).
    """
    order = {path: i for i, path in enumerate(sources)}
    skipped = sorted(summary.skipped, key=lambda s: (order.get(s.source, len(order)), s.source, s.index))
    splits = {
        split: mf.Split(
            sum(s.records for s in summary.shards.get(split, [])),
            tuple(mf.Shard(s.file, s.records, s.bytes, s.sha256) for s in summary.shards.get(split, [])),
        )
        for split in SPLITS
    }
    return mf.Manifest(
        schema_version=SCHEMA_VERSION,
        kind=spec.kind,
        target=mf.Target(spec.target, spec.target_units, spec.extensive),
        features=features_to_json(spec.features),
        vocab=spec.vocab,
        compression=compression,
        splits=splits,
        target_stats=summary.train_sums.statistics(spec.vocab["atom"]) if summary.train_sums.records else None,
        options=options,
        sources=tuple(
            mf.Source(os.path.abspath(s), sha256_of(s), summary.per_source.get(s, 0)) for s in sources
        ),
        skipped=tuple(skipped),
        notes=dict(sorted(summary.notes.items())),
        summary=mf.Summary(summary.converted, len(skipped)),
        totals=mf.Totals(
            summary.atoms,
            summary.edges,
            dict(sorted(collections.Counter(s.reason.split(":")[0] for s in skipped).items())),
        ),
        ranks=ranks,
        warnings=tuple(warnings),
        extra=dict(spec.extra),
    )
