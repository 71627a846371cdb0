"""``mpnn-prep-water``: water-cluster structures -> sharded graph TFRecords + manifest.

Inputs are files, directories or glob patterns of anything ASE reads (XYZ with the energy
on the comment line, extended XYZ, ASE ``.db``) and files in the ExaLearn tutorial's
TFRecord format (``*.proto.gz``, ``*.tfrecord[.gz]``). Example::

    mpnn-prep-water data/samples/water/water_clusters.proto.gz -o work/water --test-every 10
    mpnn-prep-water data/samples/water/minima -o work/minima --fractions 0 0 1
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from data_prep import pipeline, records
from data_prep.example_proto import serialize_graph
from data_prep.pipeline import OutputOptions, prepare_dataset
from data_prep.processes import ConversionProcesses
from data_prep.structures import KCAL_PER_MOL_PER, expand_inputs, read_structures
from data_prep.tutorial_records import is_tutorial_file, tutorial_graph, tutorial_record_chunks
from data_prep.water import ATOM_VOCAB, BOND_VOCAB, FEATURES, WaterGraphError, water_graph

log = logging.getLogger("mpnn-prep-water")

# Records per task of a tutorial file (read once in the parent): small enough to balance
# the load over the workers, large enough that handing a task over costs little.
TUTORIAL_CHUNK = 512


@dataclass(frozen=True)
class WaterTask:
    """One unit of conversion work: a structure file, or serialised records of a tutorial
    file (`records`, the first being record number `start` of the file).

    Attributes:
        features: ``(name, dtype)`` of the record features to write (from `mpnn.schema`;
            passed in so that workers need not import it, and with it TensorFlow).
    """

    path: str
    features: tuple[tuple[str, str], ...]
    energy_unit: str = "kcal/mol"
    start: int = 0
    records: tuple[bytes, ...] = ()


def convert_water_task(task: WaterTask) -> list[records.Converted | records.Skipped]:
    """Convert one task into serialised records and skip entries (runs in any conversion process)."""
    out: list[records.Converted | records.Skipped] = []

    def add(index: int, graph: dict) -> None:
        out.append(
            records.Converted(
                task.path,
                index,
                serialize_graph(graph, task.features),
                float(graph["energy"]),
                records.atom_type_counts(graph["atom"], len(ATOM_VOCAB)),
                group=int(graph["n_waters"]),
                note=graph.get("note"),
                n_atom=int(graph["n_atom"]),
                n_bond=int(graph["n_bond"]),
            )
        )

    if is_tutorial_file(task.path):
        name = os.path.basename(task.path)
        for index, serialized in enumerate(task.records, start=task.start):
            try:
                add(index, tutorial_graph(serialized, f"{name}:{index}"))
            except ValueError as exc:
                out.append(records.Skipped(task.path, index, str(exc)))
        return out

    for structure in read_structures(task.path, task.energy_unit):
        if structure.error:
            out.append(records.Skipped(task.path, structure.index, structure.error))
            continue
        try:
            add(structure.index, water_graph(structure.atoms, structure.energy, structure.record_id))
        except WaterGraphError as exc:
            out.append(records.Skipped(task.path, structure.index, str(exc)))
    return out


def plan_tasks(
    files: Sequence[str], energy_unit: str, with_distance: bool, owned: Callable[[int], bool] = lambda position: True
) -> list[WaterTask]:
    """One task per structure file; tutorial files are read here, once, and cut into
    tasks of `TUTORIAL_CHUNK` records.

    `owned(position)` says whether this process converts the task at that position of the
    list; the records of the other tutorial tasks are not kept, so that each MPI rank holds
    only its share of a large tutorial file (see `pipeline.owns_task`).

    Records from tutorial files carry no coordinates, so a dataset that includes one (or
    `with_distance` False) is written without the ``distance`` feature.
    """
    from mpnn.schema import feature_dtypes

    if any(is_tutorial_file(f) for f in files):
        with_distance = False
    names = [f for f in FEATURES if with_distance or f != "distance"]
    features = feature_dtypes(names)
    tasks = []
    for path in files:
        if not is_tutorial_file(path):
            tasks.append(WaterTask(path, features, energy_unit))
            continue
        first = len(tasks)
        chunks = tutorial_record_chunks(path, TUTORIAL_CHUNK, keep=lambda index, first=first: owned(first + index))
        for index, chunk in enumerate(chunks):
            tasks.append(WaterTask(path, features, energy_unit, index * TUTORIAL_CHUNK, chunk))
        if len(tasks) == first:  # an empty file: one empty task, so that it is accounted for
            tasks.append(WaterTask(path, features, energy_unit))
    return tasks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpnn-prep-water", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="structure files, directories, globs or tutorial TFRecords")
    pipeline.add_output_arguments(parser)
    parser.add_argument(
        "--energy-unit", choices=list(KCAL_PER_MOL_PER), default="kcal/mol", help="unit of energies in the inputs"
    )
    parser.add_argument("--no-distance", action="store_true", help="leave out the edge distance feature")
    return parser


def prepare_water(
    args: argparse.Namespace, comm: Any = None, processes: ConversionProcesses | None = None
) -> dict | None:
    """Convert (with `processes`, if any), split and write; returns the manifest (None on
    MPI ranks other than 0)."""
    files = expand_inputs(args.inputs)
    rank, size = pipeline.rank_and_size(comm)
    tasks = plan_tasks(
        files, args.energy_unit, not args.no_distance, owned=lambda position: pipeline.owns_task(position, rank, size)
    )
    spec = records.DatasetSpec(
        kind="water",
        target="energy",
        target_units="kcal/mol",
        extensive=True,
        features=tuple(name for name, _ in tasks[0].features),
        vocab={"atom": list(ATOM_VOCAB), "bond": list(BOND_VOCAB)},
        extra={"group": {"name": "n_waters", "description": "number of water molecules"}},
    )
    out = OutputOptions.from_args(args)
    options = {k: v for k, v in vars(args).items() if k not in ("inputs", "quiet")}
    return prepare_dataset(tasks, convert_water_task, spec, files, out, options, comm, processes=processes)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)

    def summary(manifest: dict) -> str:
        counts = ", ".join(f"{s} {manifest['splits'][s]['records']}" for s in records.SPLITS)
        return (
            f"converted {manifest['summary']['converted']}, skipped {manifest['summary']['skipped']} "
            f"({counts}) -> {args.output}/{records.MANIFEST_NAME}"
        )

    return pipeline.run_command(args, prepare_water, summary, log)


if __name__ == "__main__":
    sys.exit(main())
