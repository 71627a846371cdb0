"""``mpnn-prep-water``: water-cluster structures -> sharded graph TFRecords + manifest.

Inputs are files, directories or glob patterns of anything ASE reads (XYZ with the energy
on the comment line, extended XYZ, either optionally compressed, ASE ``.db``) and files in
the ExaLearn tutorial's TFRecord format (``*.proto.gz``, ``*.tfrecord[.gz]``). Example::

    mpnn-prep-water data/samples/water/water_clusters.proto.gz -o work/water --test-every 10
    mpnn-prep-water data/samples/water/minima -o work/minima --fractions 0 0 1
    mpnn-prep-water data/samples/water/water_clusters.proto.gz -o work/water-3to9 \
        --test-groups 10-11 --fractions 0.9 0.1 0

The library entry point is `prepare_water`; see `data_prep.pipeline` for how the work is
planned, spread over processes and MPI ranks, and written.
"""

from __future__ import annotations

import functools
import logging
import lzma
import math
import os
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from data_prep import pipeline, records
from data_prep.energy_scale import check_water_energies
from data_prep.formats import input_format, is_compressed
from data_prep.geometry import DEFAULT_CUTOFF, GeometryError, geometry_features
from data_prep.pipeline import OutputOptions
from data_prep.structures import (
    KCAL_PER_MOL_PER,
    Structure,
    count_database_rows,
    list_inputs,
    open_structure_file,
    read_database_rows,
    read_first_structure,
    read_structures,
    read_xyz_chunk,
    scan_xyz_frames,
)
from data_prep.tutorial_records import tutorial_graph
from data_prep.water import ATOM_VOCAB, BOND_VOCAB, FEATURES, WaterGraphError, water_graph
from mpnn import settings
from mpnn.graph_format.example import NonFiniteFeatureError, serialize_graph
from mpnn.graph_format.features import GEOMETRY, feature_dtypes
from mpnn.graph_format.manifest import Manifest
from mpnn.graph_format.tfrecord import count_records, read_records
from mpnn.settings import Allowed, setting

log = logging.getLogger("mpnn-prep-water")
# The largest pair cutoff accepted (Angstrom): a cluster of 30 waters (about 900 cubic
# Angstrom) is about 12 Angstrom across, so 20 already pairs every atom with every other.
MAX_CUTOFF = 20.0

# Structures per task of an XYZ file or database: enough that a task's set-up (seek, ASE
# reader, one call of the converter) is amortised, few enough to balance the parts.
TASK_FRAMES = 1000
# What planning raises for an input file it cannot read or count: the file becomes a skip.
# OSError (permissions, a damaged gzip/bz2 header), ValueError (a damaged tutorial file,
# not a database), EOFError / zlib.error / lzma.LZMAError (a cut or damaged stream).
_UNREADABLE = (OSError, ValueError, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class WaterOptions:
    """Options of `prepare_water` (see ``mpnn-prep-water --help``).

    Attributes:
        energy_unit: unit of the energies (and forces, per Angstrom) in the inputs
            (``"kcal/mol"`` or ``"eV"``); records hold kcal/mol (and kcal/mol/Angstrom).
        with_distance: write the edge distance feature (never for tutorial files, which
            have no coordinates).
        cutoff: write the geometry (positions, the atom pairs closer than `cutoff`
            Angstrom; `data_prep.geometry`); 0 leaves it out. Never for tutorial files.
        forces: ``"auto"`` (write forces when the first structure of the inputs has
            them), ``"yes"`` or ``"no"``. With forces, a structure without them is a skip.
        test_inputs: files, directories or globs whose structures form the test split
            (converted like the inputs); the inputs are then split into train and valid.
    """

    output: OutputOptions
    energy_unit: str = setting("kcal/mol", "unit of energies in the inputs", choices=tuple(KCAL_PER_MOL_PER))
    with_distance: bool = setting(True, "write the edge distance feature (--no-distance leaves it out)", flag=False)
    cutoff: float = setting(
        DEFAULT_CUTOFF,
        f"write the geometry: positions and every atom pair closer than this many Angstrom (default "
        f"{DEFAULT_CUTOFF}), what the geometry model (--family schnet) learns from; 0 leaves it out",
        Allowed(lambda v: 0 <= v <= MAX_CUTOFF, f"between 0 (no geometry) and {MAX_CUTOFF:g} Angstrom"),
    )
    forces: str = setting(
        "auto",
        "write forces (converted with --energy-unit, per Angstrom); auto: when the first structure has them. With "
        "forces, a structure without them is skipped",
        choices=("auto", "yes", "no"),
    )
    test_inputs: tuple[str, ...] = setting((), "inputs that form the test split", flag=False)

    def __post_init__(self) -> None:
        """Raise `UsageError` naming the flag of a setting out of range."""
        settings.check(self)


@dataclass(frozen=True)
class WaterTask:
    """One unit of conversion work: structures ``[start, stop)`` of the file `path`.

    Attributes:
        kind: ``"xyz"`` (bytes [offset, end) of an uncompressed XYZ file), ``"file"``
            (a whole file: compressed XYZ, or an empty one), ``"db"`` (rows of an ASE
            database), ``"tutorial"`` (records of a tutorial TFRecord file) or
            ``"skip"`` (an input that cannot be read: one skip entry with `reason`).
        position: global input position of the task's first structure.
        features: ``(name, dtype)`` of the record features to write.
    """

    path: str
    kind: str
    position: int
    start: int
    stop: int
    features: tuple[tuple[str, str], ...]
    energy_unit: str = "kcal/mol"
    offset: int = 0
    end: int = 0
    reason: str = ""
    cutoff: float = 0.0

    @property
    def with_geometry(self) -> bool:
        return any(name == "positions" for name, _ in self.features)

    @property
    def with_forces(self) -> bool:
        return any(name == "forces" for name, _ in self.features)


def convert_water_task(task: WaterTask) -> Iterator[records.Converted | records.Skipped]:
    """Convert one task into serialised records and skip entries, one at a time (runs in
    any conversion process). A structure whose conversion raises is a skip, never the end
    of the run."""
    for index, graph, reason in task_graphs(task):
        if graph is None:
            yield records.Skipped(task.path, index, reason)
            continue
        try:
            yield _converted(task, index, graph)
        except NonFiniteFeatureError as exc:  # e.g. a NaN distance: never a record
            yield records.Skipped(task.path, index, str(exc))


def task_graphs(task: WaterTask, energy_required: bool = True) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(index in the file, graph dict or None, why not)`` of every structure of `task`:
    the one place that turns input structures into graphs, for the converter and for
    ``mpnn-predict``. A structure without an energy, or whose energy is NaN or infinite
    (e.g. an XYZ comment line reading ``inf``), is a skip with its reason.

    Args:
        energy_required: False to build graphs of structures whose file gives no energy
            (prediction); their graph's ``energy`` is NaN.
    """
    if task.kind == "skip":
        yield task.start, None, task.reason
        return
    if task.kind == "tutorial":
        name = os.path.basename(task.path)
        stream = read_records(task.path, skip=task.start)
        for index, serialized in zip(range(task.start, task.stop), stream):
            try:
                yield index, tutorial_graph(serialized, f"{name}:{index}"), None
            except Exception as exc:  # ValueError for a bad record; anything else is a bug to report
                yield index, None, str(exc) if isinstance(exc, ValueError) else _failure(exc)
        return
    for structure in _structures(task):
        energy = structure.energy if structure.energy is not None and math.isfinite(structure.energy) else None
        problem = structure.error or (None if energy is not None else f"energy is not finite ({structure.energy})")
        if structure.atoms is None or (problem and energy_required):
            yield structure.index, None, problem
            continue
        try:
            graph = water_graph(structure.atoms, 0.0 if energy is None else structure.energy, structure.record_id)
            if task.with_geometry:
                graph.update(
                    geometry_features(structure.atoms, task.cutoff, structure.forces, task.with_forces and energy_required)
                )
        except (WaterGraphError, GeometryError) as exc:
            yield structure.index, None, str(exc)
            continue
        except Exception as exc:  # noqa: BLE001  (a structure must never kill the run)
            yield structure.index, None, _failure(exc)
            continue
        if energy is None:
            graph["energy"] = np.float32(np.nan)
        yield structure.index, graph, None


def _failure(exc: Exception) -> str:
    return f"conversion failed: {type(exc).__name__}: {exc}"


def _structures(task: WaterTask) -> Iterator[Structure]:
    if task.kind == "xyz":
        return read_xyz_chunk(task.path, task.start, task.offset, task.end, task.stop - task.start, task.energy_unit)
    if task.kind == "db":
        return read_database_rows(task.path, KCAL_PER_MOL_PER[task.energy_unit], task.start, task.stop)
    return read_structures(task.path, task.energy_unit)


def _converted(task: WaterTask, index: int, graph: dict) -> records.Converted:
    return records.Converted(
        task.path,
        index,
        task.position + index - task.start,
        str(graph["record_id"]),
        serialize_graph(graph, task.features),
        float(graph["energy"]),
        records.atom_type_counts(graph["atom"], len(ATOM_VOCAB)),
        note=graph.get("note"),
        n_atom=int(graph["n_atom"]),
        n_bond=int(graph["n_bond"]),
        group=int(graph["n_waters"]),
    )


def plan_tasks(
    files: Sequence[str], energy_unit: str, with_distance: bool, parts: int = 1, cutoff: float = 0.0,
    forces: bool = False,
) -> list[WaterTask]:
    """The tasks of `files`, in input order, each knowing the global input position of its
    first structure.

    - uncompressed XYZ: frames found by `scan_xyz_frames`, cut into `TASK_FRAMES`-frame
      byte ranges that a worker seeks to;
    - compressed XYZ and empty files: one task per file (frames counted by decompressing
      and scanning it once here);
    - ASE databases: row ranges of `TASK_FRAMES` (``db.count()``);
    - tutorial files: records counted once here (decompressing the file); one task per
      file when there are at least `parts` of them, else each file cut into `parts`
      ranges of at least `TASK_FRAMES` records. A GZIP stream cannot be entered in the
      middle, so the worker of a range decompresses (without parsing) the records before
      it: over all ranges about (parts - 1) / 2 extra decompressions of the file, about
      40 ms each for the 2 MB tutorial file.

    Records from tutorial files carry no coordinates, so a dataset that includes one (or
    `with_distance` False) is written without the ``distance`` feature, and (or with
    `cutoff` 0) without the geometry (positions, pairs within `cutoff` Angstrom, and with
    `forces` the forces).

    A file that cannot be read or counted here (unreadable, not a database, a damaged
    tutorial file) becomes one ``"skip"`` task with the reason.
    """
    if not all(input_format(f).coordinates for f in files):
        with_distance, cutoff = False, 0.0
    names = [f for f in FEATURES if with_distance or f != "distance"]
    if cutoff > 0:
        names += [*GEOMETRY, *(["forces"] if forces else [])]
    features = feature_dtypes(names)
    tasks: list[WaterTask] = []
    position = 0

    def add(path: str, kind: str, start: int, stop: int, offset: int = 0, end: int = 0) -> None:
        nonlocal position
        tasks.append(WaterTask(path, kind, position, start, stop, features, energy_unit, offset, end, cutoff=cutoff))
        position += stop - start

    # With at least as many tutorial files as parts, whole files balance the load and no
    # worker decompresses records it does not convert.
    whole_files = sum(input_format(f).reader == "tutorial" for f in files) >= parts
    for path in files:
        try:
            _plan_file(path, add, parts, whole_files)
        except _UNREADABLE as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            tasks.append(skip_task(path, f"unreadable: {reason}" if isinstance(exc, OSError) else reason, features))
    return tasks


def skip_task(path: str, reason: str, features: tuple[tuple[str, str], ...] = ()) -> WaterTask:
    """The task of an input that cannot be read: one skip entry (no structure, so no
    input position of its own)."""
    return WaterTask(path, "skip", 0, 0, 0, features, reason=reason)


def _plan_file(path: str, add: Callable[..., None], parts: int, whole_files: bool) -> None:
    """`add` the tasks of one input file (see `plan_tasks`)."""
    reader = input_format(path).reader
    if reader == "tutorial":
        n = count_records(path)
        size = max(n, 1) if whole_files else max(TASK_FRAMES, math.ceil(n / parts))
        for start in range(0, n, size):
            add(path, "tutorial", start, min(n, start + size))
    elif reader == "db":
        n = count_database_rows(path)
        for start in range(0, max(n, 1), TASK_FRAMES):
            add(path, "db", start, min(max(n, 1), start + TASK_FRAMES))
    elif is_compressed(path) or os.path.getsize(path) == 0:
        with open_structure_file(path) as handle:
            add(path, "file", 0, scan_xyz_frames(handle).count)
    else:
        with open(path, "rb") as handle:
            frames = scan_xyz_frames(handle)
        bounds = np.append(frames.starts, [frames.end, os.path.getsize(path)][: 1 + frames.tail])
        for start in range(0, frames.count, TASK_FRAMES):
            stop = min(frames.count, start + TASK_FRAMES)
            add(path, "xyz", start, stop, int(bounds[start]), int(bounds[stop]))


def prepare_water(inputs: Sequence[str], options: WaterOptions, comm: Any = None) -> Manifest | None:
    """Convert the water-cluster `inputs` (files, directories, globs), split and write the
    shards and manifest of `options.output`.

    Args:
        comm: an mpi4py communicator to spread the work over its ranks, or None.

    Returns:
        the manifest (None on MPI ranks other than 0).

    Raises:
        FileNotFoundError: an input names nothing.
        records.NothingConvertedError, records.StrictModeError: see `pipeline.prepare_dataset`.
    """
    out = options.output
    run_options = {
        **out.as_options(), "energy_unit": options.energy_unit, "no_distance": not options.with_distance,
        "cutoff": options.cutoff, "forces": options.forces, "test_inputs": list(options.test_inputs),
    }
    test_sources = frozenset(list_inputs(options.test_inputs).files) if options.test_inputs else None
    return pipeline.prepare_dataset(
        plan=lambda parts: plan_water([*inputs, *options.test_inputs], options, parts),
        converter=convert_water_task,
        out=out,
        rule=records.SplitRule(
            out.fractions, out.seed, out.test_every, test_groups=out.test_groups, test_sources=test_sources
        ),
        options=run_options,
        comm=comm,
    )


def plan_water(inputs: Sequence[str], options: WaterOptions, parts: int) -> pipeline.Plan:
    """The `pipeline.Plan` of converting `inputs` in `parts` parts."""
    listing = list_inputs(inputs)
    files = listing.files
    forces = options.forces == "yes" or (options.forces == "auto" and inputs_have_forces(files))
    tasks = plan_tasks(files, options.energy_unit, options.with_distance, parts, options.cutoff, forces)
    tasks += [skip_task(path, reason) for path, reason in listing.problems]
    extra: dict[str, Any] = {"group": {"name": "n_waters", "description": "number of water molecules"}}
    if tasks and tasks[0].with_geometry:
        extra["geometry"] = {
            "cutoff": options.cutoff,
            "forces": tasks[0].with_forces,
            "units": {"positions": "Angstrom", "forces": "kcal/mol/Angstrom"},
        }
    spec = records.DatasetSpec(
        kind="water",
        target="energy",
        target_units="kcal/mol",
        extensive=True,
        features=tuple(name for name, _ in tasks[0].features) if tasks else tuple(FEATURES),
        vocab={"atom": list(ATOM_VOCAB), "bond": list(BOND_VOCAB)},
        extra=extra,
        check=functools.partial(
            check_water_energies, energy_unit=options.energy_unit, kcal_per_mol_per=KCAL_PER_MOL_PER
        ),
    )
    passed_over = [records.Skipped(path, 0, reason) for path, reason in listing.passed_over]
    return pipeline.Plan(tasks, files, spec, passed_over)


def inputs_have_forces(files: Sequence[str]) -> bool:
    """Whether the first structure that reads, of the first file of a format that can carry
    forces (`data_prep.formats`; tutorial files cannot), comes with forces: ``--forces
    auto``'s guess for the whole set."""
    for path in files:
        if not input_format(path).forces:
            continue
        try:
            first = next(iter(read_first_structure(path)), None)
        except _UNREADABLE:
            continue
        if first is not None and first.atoms is not None:
            return first.forces is not None
    return False


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m data_prep.prep_water: the command is mpnn-prep-water (or python -m mpnn.cli.prep_water)")
