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
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from data_prep import pipeline, records
from data_prep.pipeline import OutputOptions, prepare_dataset
from data_prep.structures import KCAL_PER_MOL_PER, expand_inputs, read_structures
from data_prep.tutorial_records import count_records, is_tutorial_file, read_tutorial_graphs
from data_prep.water import ATOM_VOCAB, BOND_VOCAB, FEATURES, WaterGraphError, water_graph

log = logging.getLogger("mpnn-prep-water")

# A tutorial file is one gzip stream, so a worker reaches its chunk by reading from the
# start: the file is split into a few chunks per process (not fixed-size chunks, whose
# number, and so the re-reading, would grow with the file).
CHUNKS_PER_PROCESS = 2


@dataclass(frozen=True)
class WaterTask:
    """One unit of conversion work: a structure file, or a record range of a tutorial file."""

    path: str
    features: tuple[str, ...]
    energy_unit: str = "kcal/mol"
    start: int = 0
    stop: int = -1


def convert_water_task(task: WaterTask) -> list[records.Converted | records.Skipped]:
    """Convert one task into serialised records and skip entries (runs in pool workers)."""
    from mpnn.schema import graph_to_example

    out: list[records.Converted | records.Skipped] = []

    def add(index: int, graph: dict) -> None:
        counts = np.bincount(graph["atom"], minlength=len(ATOM_VOCAB))
        example = graph_to_example(graph, task.features).SerializeToString()
        out.append(
            records.Converted(
                task.path,
                index,
                example,
                float(graph["energy"]),
                counts,
                group=int(graph["n_waters"]),
                note=graph.get("note"),
                n_atom=int(graph["n_atom"]),
                n_bond=int(graph["n_bond"]),
            )
        )

    if is_tutorial_file(task.path):
        for index, graph in read_tutorial_graphs(task.path, task.start, task.stop):
            if isinstance(graph, str):
                out.append(records.Skipped(task.path, index, graph))
            else:
                add(index, graph)
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
    files: Sequence[str], energy_unit: str, with_distance: bool, processes: int = 1
) -> list[WaterTask]:
    """One task per structure file; each tutorial file in ``CHUNKS_PER_PROCESS *
    processes`` record ranges (`processes`: workers times MPI ranks).

    Records from tutorial files carry no coordinates, so a dataset that includes one (or
    `with_distance` False) is written without the ``distance`` feature.
    """
    if any(is_tutorial_file(f) for f in files):
        with_distance = False
    features = tuple(f for f in FEATURES if with_distance or f != "distance")
    tasks = []
    for path in files:
        if is_tutorial_file(path):
            total = count_records(path)
            chunk = max(1, -(-total // (CHUNKS_PER_PROCESS * processes)))
            for start in range(0, max(total, 1), chunk):
                tasks.append(WaterTask(path, features, energy_unit, start, min(start + chunk, total)))
        else:
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


def prepare_water(args: argparse.Namespace, comm: Any = None) -> dict | None:
    """Convert, split and write; returns the manifest (None on MPI ranks other than 0)."""
    files = expand_inputs(args.inputs)
    processes = max(1, args.workers) * (comm.Get_size() if comm is not None else 1)
    tasks = plan_tasks(files, args.energy_unit, with_distance=not args.no_distance, processes=processes)
    spec = records.DatasetSpec(
        kind="water",
        target="energy",
        target_units="kcal/mol",
        extensive=True,
        features=tasks[0].features,
        vocab={"atom": list(ATOM_VOCAB), "bond": list(BOND_VOCAB)},
        extra={"group": {"name": "n_waters", "description": "number of water molecules"}},
    )
    out = OutputOptions.from_args(args)
    options = {k: v for k, v in vars(args).items() if k not in ("inputs", "quiet")}
    return prepare_dataset(tasks, convert_water_task, spec, files, out, options, comm)


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
