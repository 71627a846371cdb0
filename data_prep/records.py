"""Convert inputs in parallel, split, and write sharded TFRecord files with a manifest.

Source-specific code (water, PDBbind) supplies a *converter*: a picklable function that
turns one input task (usually a file) into `Converted` records and `Skipped` entries. This
module does the rest, the same way for every source:

1. run the converter over the tasks in this process and a pool of workers (tqdm progress),
   keeping input order (`data_prep.processes`);
2. split the records into train/valid/test (seeded fractions, or every k-th record to test);
3. write each split into N shards in parallel threads, each under a temporary name then renamed;
4. write ``manifest.json``: schema, feature specs, shards and their record counts, target
   statistics, sources with sha256, and every skipped input with its reason.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import datetime as _dt
import hashlib
import itertools
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

from data_prep.processes import ConversionProcesses

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MANIFEST_NAME = "manifest.json"
COMPRESSIONS = {"GZIP": ".gz", "none": ""}


class Converted(NamedTuple):
    """One graph, serialised.

    A named tuple rather than a dataclass: records travel between processes and MPI ranks
    by the ten thousand, and a tuple is built and pickled several times faster.

    Attributes:
        source: the input file it came from.
        index: its position in that file.
        example: the serialised `tf.train.Example`.
        target: the regression target (units in the manifest).
        atom_type_counts: number of atoms of each type of the atom vocabulary (a tuple of
            ints: it pickles several times faster than a small NumPy array; see
            `atom_type_counts`).
        group: a small integer to report errors by (water: number of waters).
        note: what the converter had to repair, if anything (counted in the manifest).
        n_atom, n_bond: size of the graph (summed into the manifest's totals).
    """

    source: str
    index: int
    example: bytes
    target: float
    atom_type_counts: tuple[int, ...]
    group: int = 0
    note: str | None = None
    n_atom: int = 0
    n_bond: int = 0


def atom_type_counts(atom: np.ndarray, n_types: int) -> tuple[int, ...]:
    """`Converted.atom_type_counts` of a graph whose ``atom [N]`` holds type indices into a
    vocabulary of `n_types`."""
    return tuple(np.bincount(atom, minlength=n_types).tolist())


_EXAMPLE_FIELD = Converted._fields.index("example")


def metadata_columns(converted: Sequence[Converted]) -> list[tuple]:
    """Every field of `converted` but the serialised example, one tuple per field: what
    rank 0 needs of another rank's records (to split them and write the manifest), in the
    form that pickles fastest (15,000 water records: about 2 ms, against 45 ms for the
    records with their examples emptied)."""
    columns = list(zip(*converted)) if converted else [()] * len(Converted._fields)
    del columns[_EXAMPLE_FIELD]
    return columns


def from_metadata_columns(columns: Sequence[tuple]) -> list[Converted]:
    """The records of `metadata_columns`, with empty examples."""
    columns = list(columns)
    columns.insert(_EXAMPLE_FIELD, itertools.repeat(b""))
    return [Converted._make(row) for row in zip(*columns)]


@dataclass(frozen=True)
class Skipped:
    """An input that could not be converted, and why."""

    source: str
    index: int
    reason: str


@dataclass
class DatasetSpec:
    """What a source contributes to the manifest besides its records."""

    kind: str
    target: str
    target_units: str
    extensive: bool
    features: Sequence[str]
    vocab: dict[str, list[str]]
    extra: dict[str, Any] = field(default_factory=dict)


class StrictModeError(RuntimeError):
    """Raised in strict mode at the first skipped input."""


class NothingConvertedError(RuntimeError):
    """Raised when no input could be converted."""


def convert_all(
    tasks: Sequence[Any],
    converter: Callable[[Any], list[Converted | Skipped]],
    processes: ConversionProcesses | None = None,
    strict: bool = False,
    show_progress: bool = True,
    chunksize: int = 1,
) -> tuple[list[Converted], list[Skipped], list[int]]:
    """Run `converter` over `tasks` with `processes` (None: this process only), in order;
    the spawned workers take `chunksize` tasks at a time.

    Returns:
        the converted records, the skipped inputs, and for each converted record the
        position in `tasks` of the task that produced it.

    Raises:
        StrictModeError: with `strict`, at the first skipped input.
    """
    converted: list[Converted] = []
    skipped: list[Skipped] = []
    task_of: list[int] = []
    results = (processes or ConversionProcesses(1)).imap(converter, tasks, chunksize)
    with contextlib.closing(results):  # on a strict-mode error, stop handing out tasks at once
        for position, result in enumerate(tqdm(results, total=len(tasks), unit="task", disable=not show_progress)):
            for item in result:
                if isinstance(item, Skipped):
                    if strict:
                        raise StrictModeError(f"{item.source} [{item.index}]: {item.reason}")
                    log.warning("skipped %s [%d]: %s", item.source, item.index, item.reason)
                    skipped.append(item)
                else:
                    converted.append(item)
                    task_of.append(position)
    return converted, skipped, task_of


def assign_splits(
    n_records: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    test_every: int | None = None,
) -> dict[str, np.ndarray]:
    """Indices of the records in each split.

    Args:
        n_records: number of records, in input order.
        fractions: (train, valid, test) fractions; normalised to sum to one.
        seed: seed of the random assignment (the same seed gives the same split).
        test_every: if given, records 0, k, 2k, ... form the test set and the rest is split
            into train and valid in the ratio of their fractions.

    Returns:
        ``{"train": idx, "valid": idx, "test": idx}``; training indices are shuffled,
        validation and test indices are sorted (input order).
    """
    weights = np.asarray(fractions, dtype=float)
    if weights.shape != (3,) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {fractions}")
    rng = np.random.default_rng(seed)
    indices = np.arange(n_records)
    if test_every:
        if test_every < 2:
            raise ValueError(f"--test-every must be at least 2, got {test_every}")
        test = indices[indices % test_every == 0]
        rest = rng.permutation(indices[indices % test_every != 0])
        valid_share = weights[1] / max(weights[0] + weights[1], 1e-12)
        n_valid = int(round(valid_share * len(rest)))
        valid, train = rest[:n_valid], rest[n_valid:]
    else:
        order = rng.permutation(indices)
        weights = weights / weights.sum()
        n_train = int(round(weights[0] * n_records))
        n_valid = int(round(weights[1] * n_records))
        train, valid, test = order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]
    return {"train": rng.permutation(train), "valid": np.sort(valid), "test": np.sort(test)}


def shard_file_name(split: str, shard: int, n_shards: int, compression: str, prefix: str = "") -> str:
    return f"{split}-{prefix}{shard:05d}-of-{n_shards:05d}.tfrecord{COMPRESSIONS[compression]}"


def write_shard(path: str, examples: Sequence[bytes], compression: str) -> None:
    """Write `examples` to `path` via a temporary file renamed on success, so a reader
    never sees a half-written shard."""
    import tensorflow as tf  # imported here: conversion workers import this module, but need no TF

    tmp = f"{path}.tmp-{os.getpid()}"
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compression == "GZIP" else "")
    with tf.io.TFRecordWriter(tmp, options) as writer:
        for example in examples:
            writer.write(example)
    os.replace(tmp, path)


def write_splits(
    records: Sequence[Converted],
    splits: dict[str, np.ndarray],
    out_dir: str,
    shards: int,
    compression: str = "GZIP",
    workers: int = 1,
    prefix: str = "",
) -> dict[str, dict]:
    """Write every split into `shards` files (fewer if the split is smaller), records
    dealt round-robin so shard sizes differ by at most one, `workers` shards at a time.
    `prefix` goes into the file names (MPI ranks use it to write distinct files).

    Returns:
        the manifest's ``splits`` section: per split, ``records`` and the list of
        ``{"file": name relative to out_dir, "records": n}``.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {list(COMPRESSIONS)}, got {compression!r}")
    os.makedirs(out_dir, exist_ok=True)
    jobs, section = [], {}
    for split, indices in splits.items():
        n_shards = max(1, min(shards, len(indices)))
        entries = []
        for shard in range(n_shards if len(indices) else 0):
            name = shard_file_name(split, shard, n_shards, compression, prefix)
            examples = [records[i].example for i in indices[shard::n_shards]]
            jobs.append((os.path.join(out_dir, name), examples, compression))
            entries.append({"file": name, "records": len(examples)})
        section[split] = {"records": int(len(indices)), "shards": entries}
    # Threads, not processes: TensorFlow's record writer releases the GIL while it
    # compresses and writes, and a process would first have to import TensorFlow (~2 s).
    with concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(jobs)))) as threads:
        for done in [threads.submit(write_shard, *job) for job in jobs]:
            done.result()  # re-raises a writer's error
    return section


def target_statistics(records: Sequence[Converted], atom_vocab: Sequence[str]) -> dict[str, Any]:
    """Statistics of the target over `records` (normally the training split).

    ``per_atom_type_mean`` and ``graph_offset`` are the least-squares (minimum-norm)
    solution of ``target ~ sum_t count_t * mean_t + offset``: the model starts from it and
    only learns the remainder, whose spread per graph is ``residual_std``. The offset
    matters: water-cluster energies are close to linear in the size *with* an intercept,
    which a sum of per-atom terms alone cannot represent.
    """
    if not records:
        raise ValueError("no records to compute target statistics from")
    targets = np.array([r.target for r in records], dtype=np.float64)
    counts = np.array([r.atom_type_counts for r in records], dtype=np.float64)
    design = np.concatenate([counts, np.ones((len(counts), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    residual = targets - design @ solution
    return {
        "count": int(len(targets)),
        "mean": float(targets.mean()),
        "std": float(targets.std()),
        "min": float(targets.min()),
        "max": float(targets.max()),
        "per_atom_type_mean": {t: float(m) for t, m in zip(atom_vocab, solution[:-1])},
        "graph_offset": float(solution[-1]),
        "residual_std": float(residual.std()),
        "atoms_per_graph_mean": float(counts.sum(axis=1).mean()),
    }


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(
    spec: DatasetSpec,
    records: Sequence[Converted],
    skipped: Sequence[Skipped],
    splits: dict[str, np.ndarray],
    split_section: dict[str, dict],
    sources: Iterable[str],
    compression: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Assemble ``manifest.json`` (see the module docstring for its sections)."""
    from mpnn.schema import SCHEMA_VERSION, features_to_json  # imports TensorFlow, which workers need not

    per_source: dict[str, int] = {}
    for record in records:
        per_source[record.source] = per_source.get(record.source, 0) + 1
    train = [records[i] for i in splits["train"]]
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": spec.kind,
        "target": {"name": spec.target, "units": spec.target_units, "extensive": spec.extensive},
        "features": features_to_json(spec.features),
        "vocab": spec.vocab,
        "compression": compression,
        "splits": split_section,
        "target_stats": target_statistics(train, spec.vocab["atom"]) if train else None,
        "options": options,
        "sources": [
            {"path": os.path.abspath(s), "sha256": sha256_of(s), "records": per_source.get(s, 0)}
            for s in sources
        ],
        "skipped": [asdict(s) for s in skipped],
        "notes": dict(collections.Counter(r.note for r in records if r.note)),
        "summary": {"converted": len(records), "skipped": len(skipped)},
        "totals": {
            "atoms": sum(r.n_atom for r in records),
            "edges": sum(r.n_bond for r in records),
            "skipped_by_reason": dict(sorted(collections.Counter(s.reason.split(":")[0] for s in skipped).items())),
        },
        **spec.extra,
    }


def write_manifest(out_dir: str, manifest: dict[str, Any]) -> str:
    """Write ``manifest.json`` atomically; returns its path."""
    path = os.path.join(out_dir, MANIFEST_NAME)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.write("\n")
    os.replace(tmp, path)
    return path
