"""``mpnn-prep-pdbbind``: PDBbind protein-ligand complexes -> sharded graph TFRecords + manifest.

Each ROOT holds complexes as ``ROOT/<pdbid>/`` (``<pdbid>_ligand.sdf`` or ``.mol2`` and
``<pdbid>_pocket.pdb``); affinities (-log10(K/M)) come from the ``--index`` files (PDBbind
``INDEX_*`` or CASF ``CoreSet.dat``; a later file overrides an earlier one). Example::

    mpnn-prep-pdbbind pdbbind/refined-set pdbbind/v2020-other-PL \\
        --index pdbbind/index/INDEX_general_PL_data.2020 -o work/pdbbind \\
        --split core --core-index CASF-2016/power_scoring/CoreSet.dat --workers 8

A complex that cannot be used (missing or unreadable file, no affinity, a ligand that is
not in its pocket, ...) and every malformed index line is listed in the
manifest's ``skipped`` with its file and reason.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from data_prep import pipeline, records
from data_prep.example_proto import serialize_graph
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
from data_prep.pipeline import OutputOptions, prepare_dataset
from data_prep.processes import ConversionProcesses
from mpnn.schema import RWPE_ORDER

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
    """

    directory: str
    affinity: float | None
    cutoff: float = DEFAULT_CUTOFF
    hydrogens: bool = False
    skip: records.Skipped | None = None


def convert_complex_task(task: ComplexTask) -> list[records.Converted | records.Skipped]:
    """Convert one complex into a serialised record, or say why not (runs in pool workers).

    The record's source is the complex's pocket file; its target is the affinity,
    -log10(K / M); its atom type counts are over `ELEMENT_VOCAB`.
    """
    from mpnn.schema import feature_dtypes

    if task.skip is not None:
        return [task.skip]
    try:
        graph = complex_graph(task.directory, task.affinity, task.cutoff, task.hydrogens)
    except ComplexError as exc:
        return [records.Skipped(exc.path, 0, str(exc))]
    except (RuntimeError, ValueError) as exc:  # RDKit perception failing on an odd structure
        return [records.Skipped(task.directory, 0, f"conversion failed: {type(exc).__name__}: {exc}")]
    counts = records.atom_type_counts(graph["atom"], len(ELEMENT_VOCAB))
    example = serialize_graph(graph, feature_dtypes(FEATURES))
    pocket = complex_files(task.directory)["pocket.pdb"]
    return [
        records.Converted(
            pocket,
            0,
            example,
            float(task.affinity),
            counts,
            note=graph["note"],
            n_atom=int(graph["n_atom"]),
            n_bond=int(graph["n_bond"]),
        )
    ]


def record_code(record: records.Converted) -> str:
    """PDB code of a record made by `convert_complex_task` (its source is ``.../<code>/<code>_pocket.pdb``)."""
    return os.path.basename(os.path.dirname(record.source))


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
    """One task per complex directory, plus skip tasks for bad index lines, duplicate
    complexes and measurements dropped by `drop_ic50` / `drop_inequalities` (a relation
    other than ``=``)."""
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
    return tasks


def assign_by_test_set(
    metadata: Sequence[records.Converted],
    is_test: Callable[[str], bool],
    fractions: tuple[float, float, float],
    seed: int,
) -> dict[str, np.ndarray]:
    """Split with a fixed test set: records whose PDB code passes `is_test` are the test set,
    the rest is split into train and valid in the ratio of ``fractions[0] : fractions[1]``
    (seeded). Train indices are shuffled, valid and test sorted, as `records.assign_splits`.
    """
    if not fractions[0] + fractions[1] > 0:
        raise ValueError(f"train and valid fractions must not both be zero, got {fractions}")
    test = np.array([is_test(record_code(r)) for r in metadata], dtype=bool)
    rng = np.random.default_rng(seed)
    rest = rng.permutation(np.flatnonzero(~test))
    n_valid = int(round(fractions[1] / (fractions[0] + fractions[1]) * len(rest)))
    return {"train": rest[n_valid:], "valid": np.sort(rest[:n_valid]), "test": np.flatnonzero(test)}


def split_assigner(
    args: argparse.Namespace, entries: dict[str, IndexEntry]
) -> Callable[[list[records.Converted]], dict[str, np.ndarray]] | None:
    """The ``assign`` function of `prepare_dataset` for ``--split core|year`` (None for random).

    core: the complexes in ``--core-index`` are the test set; year: those released in
    ``--test-from-year`` or later.
    """
    if args.split == "core":
        core, errors = read_index(args.core_index)
        for error in errors:
            log.warning("core index: %s", error)
        test_codes = frozenset(e.code for e in core)
    elif args.split == "year":
        test_codes = frozenset(code for code, e in entries.items() if e.year >= args.test_from_year)
    else:
        return None
    return functools.partial(
        assign_by_test_set, is_test=test_codes.__contains__, fractions=tuple(args.fractions), seed=args.seed
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpnn-prep-pdbbind", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", nargs="+", help="directories holding <pdbid>/ complex directories")
    parser.add_argument(
        "--index", action="append", required=True, metavar="FILE", help="PDBbind index file (repeatable)"
    )
    pipeline.add_output_arguments(parser)
    parser.add_argument(
        "--cutoff", type=float, default=DEFAULT_CUTOFF, help=f"edge cutoff in Angstrom (default {DEFAULT_CUTOFF})"
    )
    parser.add_argument("--hydrogens", action="store_true", help="keep hydrogen atoms as nodes (element 'other')")
    parser.add_argument("--drop-ic50", action="store_true", help="skip complexes whose affinity is an IC50")
    parser.add_argument(
        "--drop-inequalities", action="store_true", help="skip affinities given as <, >, <=, >= or ~ (keep only '=')"
    )
    parser.add_argument(
        "--split",
        choices=("random", "core", "year"),
        default="random",
        help="random: by --fractions/--test-every; core: --core-index complexes are the test set; "
        "year: complexes released in --test-from-year or later are; in both, the rest is split "
        "into train and valid by the first two --fractions",
    )
    parser.add_argument("--core-index", metavar="FILE", help="index of the test set for --split core")
    parser.add_argument("--test-from-year", type=int, metavar="YYYY", help="first test year for --split year")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and cross-check the options (exits with a usage error when they conflict)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.cutoff > 0:
        parser.error(f"--cutoff must be positive, got {args.cutoff}")
    if args.split == "core" and not args.core_index:
        parser.error("--split core needs --core-index")
    if args.split == "year" and args.test_from_year is None:
        parser.error("--split year needs --test-from-year")
    if args.split != "random" and args.test_every:
        parser.error("--test-every applies to --split random only")
    if args.split != "random" and not args.fractions[0] + args.fractions[1] > 0:
        parser.error("--split core|year needs a positive TRAIN or VALID fraction")
    return args


def prepare_pdbbind(
    args: argparse.Namespace, comm: Any = None, processes: ConversionProcesses | None = None
) -> dict | None:
    """Convert (with `processes`, if any), split and write; returns the manifest (None on
    MPI ranks other than 0)."""
    entries, index_errors = load_indexes(args.index)
    tasks = plan_tasks(
        args.roots, entries, index_errors, args.cutoff, args.hydrogens, args.drop_ic50, args.drop_inequalities
    )
    spec = records.DatasetSpec(
        kind="pdbbind",
        target="affinity",
        target_units="-log10(K/M)",
        extensive=False,
        features=FEATURES,
        vocab={"atom": list(ELEMENT_VOCAB), "bond": list(BOND_VOCAB)},
        extra={
            "atom_features": list(ATOM_FEATURE_NAMES),
            "cutoff": args.cutoff,
            "rwpe_order": RWPE_ORDER,
            "index_files": [os.path.abspath(p) for p in args.index],
        },
    )
    out = OutputOptions.from_args(args)
    inputs = [
        path
        for task in tasks
        if task.skip is None
        for path in complex_files(task.directory).values()
        if os.path.exists(path)
    ]
    sources = [*args.index, *([args.core_index] if args.core_index else []), *inputs]
    options = {k: v for k, v in vars(args).items() if k != "quiet"}
    return prepare_dataset(
        tasks, convert_complex_task, spec, sources, out, options, comm, split_assigner(args, entries), processes
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)

    def summary(manifest: dict) -> str:
        totals = manifest["totals"]
        reasons = ", ".join(f"{reason} {n}" for reason, n in totals["skipped_by_reason"].items())
        counts = ", ".join(f"{s} {manifest['splits'][s]['records']}" for s in records.SPLITS)
        return (
            f"converted {manifest['summary']['converted']}, skipped {manifest['summary']['skipped']}"
            f"{f' ({reasons})' if reasons else ''}; {counts}; {totals['atoms']} atoms, {totals['edges']} edges "
            f"-> {args.output}/{records.MANIFEST_NAME}"
        )

    return pipeline.run_command(args, prepare_pdbbind, summary, log)


if __name__ == "__main__":
    sys.exit(main())
