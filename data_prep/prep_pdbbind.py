"""``mpnn-prep-pdbbind``: PDBbind protein-ligand complexes -> sharded graph TFRecords + manifest.

Each ROOT holds complexes as ``ROOT/<pdbid>/`` (``<pdbid>_ligand.sdf`` or ``.mol2`` and
``<pdbid>_pocket.pdb``); affinities (-log10(K/M)) come from the ``--index`` files (PDBbind
``INDEX_*`` or CASF ``CoreSet.dat``; a later file overrides an earlier one). Example::

    mpnn-prep-pdbbind pdbbind/refined-set pdbbind/v2020-other-PL \\
        --index pdbbind/index/INDEX_general_PL_data.2020 -o work/pdbbind \\
        --split core --core-index CASF-2016/power_scoring/CoreSet.dat --workers 8

A complex that cannot be used (an empty directory, a missing or unreadable file, no
affinity, a ligand that is not in its pocket, ...), every malformed index line and every
other entry of a ROOT (a file, a directory not named like a PDB code) is listed in the
manifest's ``skipped`` with its file and reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from data_prep import pipeline, records
from data_prep.pdbbind import (
    ATOM_FEATURE_NAMES,
    BOND_VOCAB,
    DEFAULT_CUTOFF,
    ELEMENT_VOCAB,
    FEATURES,
    ComplexError,
    complex_files,
    complex_graph,
)
from data_prep.pdbbind_index import IndexEntry, IndexFormatError, read_index
from data_prep.pipeline import OutputOptions
from mpnn import settings
from mpnn.errors import UsageError
from mpnn.graph_format.example import NonFiniteFeatureError, serialize_graph
from mpnn.graph_format.features import RWPE_ORDER, feature_dtypes
from mpnn.graph_format.manifest import Manifest
from mpnn.settings import POSITIVE, setting

log = logging.getLogger("mpnn-prep-pdbbind")

_PDB_CODE = re.compile(r"^[0-9][a-z0-9]{3}$", re.IGNORECASE)


@dataclass(frozen=True)
class ComplexTask:
    """One unit of conversion work: a complex directory, or a skip decided while planning.

    Attributes:
        directory: ``ROOT/<pdbid>``.
        affinity: -log10(K / M) from the index, None if the index has none.
        cutoff: edge cutoff, Angstrom.
        hydrogens: keep hydrogen atoms as nodes.
        skip: when set, the task yields only this (bad index line, filtered measurement).
        position: the task's place in the list of tasks (its global input position).
    """

    directory: str
    affinity: float | None
    cutoff: float = DEFAULT_CUTOFF
    hydrogens: bool = False
    skip: records.Skipped | None = None
    position: int = 0


def convert_complex_task(task: ComplexTask) -> Iterator[records.Converted | records.Skipped]:
    """Convert one complex into a serialised record, or say why not (runs in any
    conversion process; a complex whose conversion raises is a skip, never the end of the run).

    The record's source is the complex's pocket file, its id the PDB code; its target is
    the affinity, -log10(K / M); its atom type counts are over `ELEMENT_VOCAB`.
    """
    if task.skip is not None:
        yield task.skip
        return
    try:
        graph = complex_graph(task.directory, task.affinity, task.cutoff, task.hydrogens)
    except ComplexError as exc:
        yield records.Skipped(exc.path, 0, str(exc))
        return
    except Exception as exc:  # noqa: BLE001  (RDKit perception failing on an odd structure, ...)
        yield records.Skipped(task.directory, 0, f"conversion failed: {type(exc).__name__}: {exc}")
        return
    try:
        example = serialize_graph(graph, feature_dtypes(FEATURES))
    except NonFiniteFeatureError as exc:  # e.g. a NaN Gasteiger charge: never a record
        yield records.Skipped(task.directory, 0, str(exc))
        return
    yield records.Converted(
        complex_files(task.directory)["pocket.pdb"],
        0,
        task.position,
        str(graph["record_id"]),
        example,
        float(task.affinity),
        records.atom_type_counts(graph["atom"], len(ELEMENT_VOCAB)),
        note=graph["note"],
        n_atom=int(graph["n_atom"]),
        n_bond=int(graph["n_bond"]),
    )


def find_complexes(roots: Sequence[str]) -> list[str]:
    """Complex directories ``ROOT/<pdbid>/`` (named like a PDB code), root by root, sorted.

    Raises:
        FileNotFoundError: a root is not a directory.
    """
    directories = []
    for root in roots:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"PDBbind root {root} is not a directory")
        for name in sorted(os.listdir(root)):
            if _PDB_CODE.match(name) and os.path.isdir(os.path.join(root, name)):
                directories.append(os.path.join(root, name))
    return directories


def passed_over(roots: Sequence[str]) -> list[records.Skipped]:
    """The entries of `roots` that `find_complexes` passes over (not a directory named like
    a PDB code, e.g. PDBbind's ``index/`` and ``readme/``), as skip entries for the manifest."""
    found = []
    for root in roots:
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if not os.path.isdir(path):
                found.append(records.Skipped(path, 0, "not a complex directory: a file"))
            elif not _PDB_CODE.match(name):
                found.append(records.Skipped(path, 0, "not a complex directory: name is not a PDB code"))
    return found


def load_indexes(paths: Sequence[str]) -> tuple[dict[str, IndexEntry], list[IndexFormatError]]:
    """Entries by PDB code over the index files `paths` (later files win), and bad lines."""
    entries: dict[str, IndexEntry] = {}
    errors: list[IndexFormatError] = []
    for path in paths:
        file_entries, file_errors = read_index(path)
        errors.extend(file_errors)
        for entry in file_entries:
            previous = entries.get(entry.code)
            if previous is not None and previous.affinity != entry.affinity:
                log.warning(
                    "%s: affinity %.2f of %s:%d replaced by %.2f (%s:%d)",
                    entry.code, previous.affinity, previous.path, previous.line, entry.affinity, entry.path, entry.line,
                )
            entries[entry.code] = entry
    return entries, errors


def plan_tasks(
    roots: Sequence[str],
    entries: dict[str, IndexEntry],
    index_errors: Sequence[IndexFormatError],
    cutoff: float = DEFAULT_CUTOFF,
    hydrogens: bool = False,
    drop_ic50: bool = False,
    drop_inequalities: bool = False,
) -> list[ComplexTask]:
    """One task per complex directory, plus skip tasks for bad index lines, duplicate or
    empty complex directories and measurements dropped by `drop_ic50` /
    `drop_inequalities` (a relation other than ``=``)."""
    tasks = [
        ComplexTask("", None, skip=records.Skipped(e.path, e.line, f"bad index line: {e.problem}"))
        for e in index_errors
    ]
    seen: dict[str, str] = {}
    for directory in find_complexes(roots):
        code = os.path.basename(directory).lower()
        entry = entries.get(code)
        skip = None
        if code in seen:
            skip = records.Skipped(directory, 0, f"duplicate complex: {code} already read from {seen[code]}")
        elif not os.listdir(directory):
            skip = records.Skipped(directory, 0, "empty complex directory")
        elif entry is not None and drop_ic50 and entry.measure == "IC50":
            reason = f"IC50 dropped: the affinity of {code} is an IC50 (--drop-ic50)"
            skip = records.Skipped(entry.path, entry.line, reason)
        elif entry is not None and drop_inequalities and entry.relation != "=":
            reason = f"inequality dropped: {code} has {entry.measure}{entry.relation} (--drop-inequalities)"
            skip = records.Skipped(entry.path, entry.line, reason)
        seen.setdefault(code, directory)
        tasks.append(ComplexTask(directory, entry.affinity if entry else None, cutoff, hydrogens, skip))
    unused = len(set(entries) - set(seen))
    if unused:
        log.info("%d index entries have no complex directory under %s", unused, ", ".join(roots))
    return [dataclasses.replace(task, position=position) for position, task in enumerate(tasks)]


@dataclass(frozen=True)
class PdbbindOptions:
    """Options of `prepare_pdbbind` (see ``mpnn-prep-pdbbind --help``).

    Attributes:
        index: PDBbind index files (a later one overrides an earlier one).
        split: ``"random"`` (by the output's fractions / test_every), ``"core"`` (the
            complexes of `core_index` are the test set) or ``"year"`` (those released in
            `test_from_year` or later are); in both, the rest goes to train / valid by the
            first two fractions (a seeded hash of the PDB code).
        cutoff: edge cutoff, Angstrom.
    """

    output: OutputOptions
    index: tuple[str, ...] = setting(help="PDBbind index file (repeatable)", flag=False)
    cutoff: float = setting(DEFAULT_CUTOFF, f"edge cutoff in Angstrom (default {DEFAULT_CUTOFF})", POSITIVE)
    hydrogens: bool = setting(False, "keep hydrogen atoms as nodes (element 'other')")
    drop_ic50: bool = setting(False, "skip complexes whose affinity is an IC50")
    drop_inequalities: bool = setting(False, "skip affinities given as <, >, <=, >= or ~ (keep only '=')")
    split: str = setting(
        "random",
        "random: by --fractions/--test-every; core: --core-index complexes are the test set; year: complexes "
        "released in --test-from-year or later are; in both, the rest is split into train and valid by the first "
        "two --fractions",
        choices=("random", "core", "year"),
    )
    core_index: str | None = setting(None, "index of the test set for --split core")
    test_from_year: int | None = setting(None, "first test year for --split year")

    def __post_init__(self) -> None:
        """Raise `UsageError` naming the flag of a setting out of range or in conflict."""
        settings.check(self)
        if self.split == "core" and not self.core_index:
            raise UsageError("argument --core-index: required with --split core")
        if self.split == "year" and self.test_from_year is None:
            raise UsageError("argument --test-from-year: required with --split year")
        if self.split != "random" and self.output.test_every:
            raise UsageError("argument --test-every: applies to --split random only")
        if self.split != "random" and not self.output.fractions[0] + self.output.fractions[1] > 0:
            raise UsageError("argument --fractions: --split core|year needs a positive TRAIN or VALID fraction")


def test_codes(options: PdbbindOptions, entries: dict[str, IndexEntry]) -> frozenset[str] | None:
    """PDB codes of the test set for ``split`` core / year; None for random."""
    if options.split == "core":
        core, errors = read_index(options.core_index)
        for error in errors:
            log.warning("core index: %s", error)
        return frozenset(e.code for e in core)
    if options.split == "year":
        return frozenset(code for code, e in entries.items() if e.year >= options.test_from_year)
    return None


def prepare_pdbbind(roots: Sequence[str], options: PdbbindOptions, comm: Any = None) -> Manifest | None:
    """Convert the complexes under `roots`, split and write the shards and manifest of
    `options.output`.

    Args:
        comm: an mpi4py communicator to spread the work over its ranks, or None.

    Returns:
        the manifest (None on MPI ranks other than 0).
    """
    out = options.output
    entries, index_errors = load_indexes(options.index)
    rule = records.SplitRule(out.fractions, out.seed, out.test_every, test_codes(options, entries))
    run_options = {
        "roots": list(roots), **out.as_options(), "index": list(options.index), "cutoff": options.cutoff,
        "hydrogens": options.hydrogens, "drop_ic50": options.drop_ic50,
        "drop_inequalities": options.drop_inequalities, "split": options.split,
        "core_index": options.core_index, "test_from_year": options.test_from_year,
    }

    def plan(parts: int) -> pipeline.Plan:
        tasks = plan_tasks(
            roots, entries, index_errors, options.cutoff, options.hydrogens, options.drop_ic50,
            options.drop_inequalities,
        )
        inputs = [
            path
            for task in tasks
            if task.skip is None
            for path in complex_files(task.directory).values()
            if os.path.exists(path)
        ]
        sources = [*options.index, *([options.core_index] if options.core_index else []), *inputs]
        spec = records.DatasetSpec(
            kind="pdbbind",
            target="affinity",
            target_units="-log10(K/M)",
            extensive=False,
            features=FEATURES,
            vocab={"atom": list(ELEMENT_VOCAB), "bond": list(BOND_VOCAB)},
            extra={
                "atom_features": list(ATOM_FEATURE_NAMES),
                "cutoff": options.cutoff,
                "rwpe_order": RWPE_ORDER,
                "index_files": [os.path.abspath(p) for p in options.index],
            },
        )
        return pipeline.Plan(tasks, sources, spec, passed_over(roots))

    return pipeline.prepare_dataset(plan, convert_complex_task, out, rule, run_options, comm)


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m data_prep.prep_pdbbind: the command is mpnn-prep-pdbbind (or python -m mpnn.cli.prep_pdbbind)")
