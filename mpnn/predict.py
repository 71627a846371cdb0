"""``mpnn-predict``: energies (and, from a geometry model, forces) of water clusters from a
trained model.

Reads anything ``mpnn-prep-water`` reads (XYZ, extended XYZ, ASE databases, tutorial
TFRecords; files, directories or globs) and writes one CSV row per structure, or with an
``.extxyz`` output each structure with its predicted energy and forces (a geometry model:
`mpnn.models.schnet`; eV and eV/Angstrom, as ASE reads them). The graphs
are those of the converter and the loader, built by the same functions: the converter's
`data_prep.prep_water.task_graphs`, serialised with `serialize_graph`, parsed with
`mpnn.data.parse_spec` and merged with `mpnn.data.merge_batch`; so a structure is
predicted exactly as it would be after ``mpnn-prep-water`` and ``mpnn-evaluate`` (a
geometry model's pairs built with the cutoff it was trained with). Memory
stays bounded on long inputs: structures are read, predicted and written a batch at a time.

The model comes from a run directory of ``mpnn-train`` (``model.keras``, and the data
set's manifest for its vocabularies and statistics) or from an ``mpnn-export`` directory
(a TensorFlow SavedModel and `EXPORT_METADATA`); `load_trained` takes either, and
`mpnn.ase` and `mpnn.design` use the same `TrainedModel`.

Example::

    mpnn-predict --model runs/demo data/samples/water/minima -o minima.csv
    mpnn-predict --model runs/geometry data/samples/water/minima -o minima.extxyz
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import ase.io
import numpy as np
import tensorflow as tf
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from tqdm import tqdm

from data_prep.formats import input_format
from data_prep.prep_water import plan_tasks, task_graphs
from data_prep.structures import KCAL_PER_MOL_PER, expand_inputs
from data_prep.water import ATOM_VOCAB, BOND_VOCAB
from mpnn.data import merge_batch, parse_spec
from mpnn.errors import ModelError
from mpnn.graph_format.example import serialize_graph
from mpnn.graph_format.features import GEOMETRY, REQUIRED, feature_dtypes
from mpnn.rundir import EXPORT_METADATA, RunDir, locate_model
from mpnn.settings import AT_LEAST_1, setting

log = logging.getLogger("mpnn-predict")

# eV per unit of the model's energies, for ASE (which works in eV).
EV_PER_UNIT = {"kcal/mol": 1.0 / KCAL_PER_MOL_PER["eV"], "eV": 1.0}
CSV_COLUMNS = ("file", "index", "n_waters", "predicted_energy", "file_energy", "skipped")


@dataclass(frozen=True)
class TrainedModel:
    """A trained water-cluster energy model, from a run directory or an export.

    Attributes:
        source: the run directory or export directory it came from.
        uses_distance: whether the model reads the edge ``distance`` (Angstrom), which only
            inputs with coordinates provide; a topology model reads types and bonds only.
        units: unit of the predicted energies (the training target's, e.g. ``"kcal/mol"``);
            forces are in `force_units`.
        metadata: what the model was trained on: ``vocab``, ``target`` and
            ``target_stats`` of the data set's manifest (when it could be found), ``model``,
            ``architecture`` and for a geometry model ``geometry`` (cutoff, units).
        input_names: the entries of a merged batch the model takes.
        forward: merged batch (see `mpnn.data.merge_batch`; only `input_names`) -> ``[B]``
            energies in `units`.
        cutoff: for a geometry model (one that takes ``positions``: `mpnn.models.schnet`),
            the pair cutoff it was trained with, Angstrom; None for other models.
        forward_forces: for a geometry model, merged batch -> (energies ``[B]`` in
            `units`, forces ``[N, 3]`` in `force_units`, ``-dE/dR``); None for others.
    """

    source: str
    uses_distance: bool
    units: str
    metadata: dict[str, Any]
    input_names: tuple[str, ...]
    forward: Callable[[dict[str, tf.Tensor]], tf.Tensor] = field(repr=False)
    cutoff: float | None = None
    forward_forces: Callable[[dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor]] | None = field(
        default=None, repr=False
    )

    @property
    def has_forces(self) -> bool:
        """Whether the model sees geometry, so that it gives forces."""
        return self.cutoff is not None

    @property
    def needs_coordinates(self) -> bool:
        """Whether the model reads anything only inputs with coordinates provide."""
        return self.uses_distance or self.has_forces

    @property
    def force_units(self) -> str:
        """Unit of the predicted forces: the energy unit per Angstrom."""
        return f"{self.units}/Angstrom"

    @property
    def record_features(self) -> tuple[str, ...]:
        """The record features a graph needs for this model (written and parsed as the
        loader does)."""
        return (
            *REQUIRED,
            *(("distance",) if self.uses_distance else ()),
            *(GEOMETRY if self.has_forces else ()),
        )

    @property
    def ev_per_unit(self) -> float:
        """Factor from the model's energy unit to eV (and from `force_units` to eV/Angstrom)."""
        if self.units not in EV_PER_UNIT:
            raise ModelError(f"{self.source}: energies in {self.units!r}, which mpnn cannot convert to eV")
        return EV_PER_UNIT[self.units]

    def predict_graphs(self, graphs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Energies ``[len(graphs)]`` (in `units`) of graph dicts (see `mpnn.graph_format.features`), in one
        batch. Each graph needs the `record_features`."""
        return self.predict_serialized(self._serialize(graphs))

    def predict_serialized(self, records: Sequence[bytes]) -> np.ndarray:
        """Energies ``[len(records)]`` of serialised graph records holding the
        `record_features`, in one batch."""
        if not records:
            return np.zeros(0, np.float32)
        return self._predict_batch(tf.constant(list(records), tf.string)).numpy()

    def predict_graphs_with_forces(self, graphs: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """`predict_serialized_with_forces` of graph dicts holding the `record_features`."""
        return self.predict_serialized_with_forces(self._serialize(graphs))

    def predict_serialized_with_forces(self, records: Sequence[bytes]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Energies ``[len(records)]`` (in `units`) and forces, one ``[n_atom, 3]`` array per
        record (in `force_units`), of serialised records holding the `record_features`, in
        one batch.

        Raises:
            ModelError: a model without geometry (it has no forces).
        """
        if not self.has_forces:
            raise ModelError(f"{self.source}: a model that does not take positions has no forces")
        if not records:
            return np.zeros(0, np.float32), []
        energy, forces, n_atom = self._predict_forces_batch(tf.constant(list(records), tf.string))
        return energy.numpy(), np.split(forces.numpy(), np.cumsum(n_atom.numpy())[:-1])

    def _serialize(self, graphs: Sequence[Mapping[str, Any]]) -> list[bytes]:
        dtypes = feature_dtypes(self.record_features)
        return [serialize_graph(graph, dtypes) for graph in graphs]

    def _merged_inputs(self, serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """The model's inputs of a batch of serialised records, merged as the loader does,
        and the atoms of each record ``[B]``."""
        parsed = tf.io.parse_example(serialized, parse_spec(self.record_features))
        merged = merge_batch(parsed)
        return {name: merged[name] for name in self.input_names}, parsed["n_atom"]

    @functools.cached_property
    def _predict_batch(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """Parse, merge and predict in one traced function (traced once: the input is a
        ``[None]`` string tensor)."""

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def predict(serialized: tf.Tensor) -> tf.Tensor:
            return self.forward(self._merged_inputs(serialized)[0])

        return predict

    @functools.cached_property
    def _predict_forces_batch(self) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
        """As `_predict_batch`, giving energies ``[B]``, forces ``[N, 3]`` and the atoms of
        each record ``[B]``."""

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def predict(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            inputs, n_atom = self._merged_inputs(serialized)
            energy, forces = self.forward_forces(inputs)
            return energy, forces, n_atom

        return predict


def load_trained(path: str) -> TrainedModel:
    """The model of a run directory (or its ``model.keras``) or of an ``mpnn-export``
    directory (`mpnn.rundir.locate_model`).

    Raises:
        InputError: nothing at `path`, or nothing loadable there (the message names it).
        ModelError: a model not trained on water clusters.
    """
    location = locate_model(path)
    if location.kind == "export":
        return _load_export(location.path)
    return _load_run(location.run, location.model_file)


def run_metadata(run: RunDir) -> dict[str, Any]:
    """What a run directory records of its training data: ``target`` (name, units) from
    ``metrics.json``, and ``vocab``, ``target_stats``, ``kind`` and ``features`` from the
    data set's manifest (``manifest.json`` in the run directory, else the one that
    ``config.json`` names) when it can be read; ``model`` and ``architecture``; ``geometry``
    (cutoff, units of positions and forces) of data sets with geometry."""
    config = run.config() if os.path.isfile(run.config_path) else {}
    metrics = run.metrics() if run.has_metrics() else {}
    manifest = run.manifest()
    stats = manifest.target_stats if manifest else None
    return {
        "kind": manifest.kind if manifest else None,
        "target": metrics.get("target") or (dataclasses.asdict(manifest.target) if manifest else None),
        "vocab": manifest.vocab if manifest else None,
        "target_stats": dataclasses.asdict(stats) if stats else None,
        "data_features": manifest.feature_names if manifest else [],
        "manifest": manifest.path if manifest else None,
        "model": run.family(),
        "architecture": metrics.get("architecture") or config.get("model_options"),
        "geometry": manifest.extra.get("geometry") if manifest else None,
    }


def check_water_metadata(source: str, metadata: Mapping[str, Any]) -> None:
    """Raise `ModelError` unless the model was trained on water clusters with this
    package's vocabularies (O = 0, H = 1; covalent = 0, hydrogen = 1)."""
    kind, vocab = metadata.get("kind"), metadata.get("vocab")
    if kind not in (None, "water"):
        raise ModelError(f"{source}: trained on {kind!r} data; this works on water clusters only")
    if vocab and (list(vocab.get("atom", [])) != list(ATOM_VOCAB) or list(vocab.get("bond", [])) != list(BOND_VOCAB)):
        raise ModelError(f"{source}: vocabularies {vocab} differ from the water graphs' {ATOM_VOCAB}, {BOND_VOCAB}")


def _load_run(run: RunDir, model_file: str) -> TrainedModel:
    from mpnn.models import load_model  # imports nfp; exports load without it

    metadata = run_metadata(run)
    check_water_metadata(run.path, metadata)
    target = metadata.get("target")
    if not target:
        raise ModelError(f"{run.path}: no metrics.json and no readable data manifest, so the energy unit is unknown")
    return keras_trained_model(load_model(model_file), run.path, target["units"], metadata)


def keras_trained_model(model: tf.keras.Model, source: str, units: str, metadata: dict[str, Any]) -> TrainedModel:
    """A Keras model (from `mpnn.models.load_model` or a builder) as a `TrainedModel`
    predicting in `units`; a geometry model also gives forces (`mpnn.forces`).

    Raises:
        ModelError: `metadata` states forces in a unit other than `units` per Angstrom.
    """
    from mpnn.forces import energy_and_forces, takes_positions
    from mpnn.models.schnet import model_cutoff

    cutoff = model_cutoff(model) if takes_positions(model) else None
    if cutoff is not None:
        stated = ((metadata.get("geometry") or {}).get("units") or {}).get("forces")
        check_force_units(source, units, stated)
    return TrainedModel(
        source=source,
        uses_distance="distance" in model.input_names,
        units=units,
        metadata=metadata,
        input_names=tuple(model.input_names),
        forward=lambda inputs: model(inputs, training=False),
        cutoff=cutoff,
        forward_forces=(lambda inputs: energy_and_forces(model, inputs)) if cutoff is not None else None,
    )


def check_force_units(source: str, units: str, stated: str | None) -> None:
    """Raise `ModelError` when a model's forces are stated (`stated`, None: not stated) in
    another unit than its energy unit `units` per Angstrom, the unit `mpnn.forces` gives."""
    if stated is not None and stated != f"{units}/Angstrom":
        raise ModelError(f"{source}: forces stated in {stated!r}, energies in {units!r}: the units do not match")


def _load_export(directory: str) -> TrainedModel:
    """Raises `ModelError` naming `directory` when its metadata or SavedModel is unreadable
    or incomplete."""
    try:
        with open(os.path.join(directory, EXPORT_METADATA)) as handle:
            metadata = json.load(handle)
        if not isinstance(metadata, dict):
            raise ValueError(f"expected a JSON object, got {type(metadata).__name__}")
        check_water_metadata(directory, metadata)
        inputs = tuple(metadata["inputs"])
        units = metadata["target"]["units"]
        cutoff = None
        if "positions" in inputs:
            check_force_units(directory, units, metadata["outputs"]["forces"]["units"])
            cutoff = float(metadata["geometry"]["cutoff"])
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelError(f"{directory}: not a readable mpnn-export ({EXPORT_METADATA}: {detail})") from None
    try:
        loaded = tf.saved_model.load(directory)
        signature = loaded.signatures["serving_default"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{directory}: not a readable mpnn-export ({exc})") from None

    def forward(batch: dict[str, tf.Tensor]) -> tf.Tensor:
        return signature(**batch)["energy"]

    def forward_forces(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        outputs = signature(**batch)
        return outputs["energy"], outputs["forces"]

    # Keep the loaded object alive as long as the functions that use its variables.
    forward.saved_model = forward_forces.saved_model = loaded  # type: ignore[attr-defined]
    return TrainedModel(
        source=directory,
        uses_distance="distance" in inputs,
        units=units,
        metadata=metadata,
        input_names=inputs,
        forward=forward,
        cutoff=cutoff,
        forward_forces=forward_forces if cutoff is not None else None,
    )


@dataclass(frozen=True)
class Item:
    """One input structure: its graph, or why it has none.

    Attributes:
        source, index: the file and the structure's position in it.
        graph: graph dict (see `mpnn.graph_format.features`), or None when skipped.
        file_energy: the energy the file gives (kcal/mol), or None.
        skipped: the reason the structure cannot be predicted, or None.
    """

    source: str
    index: int
    graph: dict[str, Any] | None
    file_energy: float | None = None
    skipped: str | None = None


def check_inputs(model: TrainedModel, files: Sequence[str]) -> None:
    """Raise `ModelError` when `model` needs a feature that some input cannot provide
    (distances or positions from a topology-only tutorial file)."""
    if model.needs_coordinates:
        tutorial = [f for f in files if not input_format(f).coordinates]
        if tutorial:
            reads = "interatomic distances" if model.uses_distance else "atom positions"
            raise ModelError(
                f"{model.source} uses {reads}, but {tutorial[0]} holds topology-only "
                "tutorial records (no coordinates); use a model trained without distances"
            )


def read_items(files: Sequence[str], energy_unit: str = "kcal/mol", cutoff: float | None = None) -> Iterator[Item]:
    """Every structure of `files` (see `expand_inputs`) as an `Item`, lazily and in order,
    its graph built by the converter's own `data_prep.prep_water.task_graphs`, with the
    geometry (positions, the atom pairs closer than `cutoff` Angstrom) when `cutoff` is
    given. A structure without an energy is still predicted."""
    tasks = plan_tasks(files, energy_unit, with_distance=True, cutoff=cutoff or 0.0)
    for task in tasks:
        for index, graph, reason in task_graphs(task, energy_required=False):
            energy = None if graph is None or not math.isfinite(graph["energy"]) else float(graph["energy"])
            yield Item(task.path, index, graph, energy, reason)


@dataclass(frozen=True)
class Prediction:
    """What the model says of one `Item`.

    Attributes:
        item: the structure.
        energy: predicted energy (the model's unit), None when the item was skipped.
        forces: predicted forces ``[n_atom, 3]`` (the model's unit per Angstrom) from a
            geometry model, else None.
    """

    item: Item
    energy: float | None
    forces: np.ndarray | None = None


def predict_items(model: TrainedModel, items: Iterable[Item], batch_size: int = 256) -> Iterator[Prediction]:
    """The `Prediction` of every item, in input order, predicting `batch_size` structures at
    a time; with forces when `model` has them."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    dtypes = feature_dtypes(model.record_features)
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, batch_size)):
        records = [serialize_graph(item.graph, dtypes) for item in batch if item.graph is not None]
        if model.has_forces:
            energies, forces = model.predict_serialized_with_forces(records)
        else:
            energies, forces = model.predict_serialized(records), [None] * len(records)
        predicted = zip(energies.tolist(), forces)
        for item in batch:
            yield Prediction(item, *next(predicted)) if item.graph is not None else Prediction(item, None)


@dataclass(frozen=True)
class PredictOptions:
    """Options of `predict_files` (see ``mpnn-predict --help``)."""

    batch_size: int = setting(256, "structures per model call (default 256)", AT_LEAST_1)
    energy_unit: str = setting("kcal/mol", "unit of energies in the inputs", flag=False)
    show_progress: bool = setting(True, "a progress bar on stderr", flag=False)


@dataclass(frozen=True)
class PredictSummary:
    """What `predict_files` did: structures predicted and skipped, and the file written."""

    predicted: int
    skipped: int
    output: str


# Outputs with this suffix are written as extended XYZ (structures with energies and forces);
# any other output is CSV.
EXTXYZ_SUFFIX = ".extxyz"


def predict_files(model: TrainedModel, inputs: Sequence[str], output: str, options: PredictOptions = PredictOptions()) -> PredictSummary:
    """Predict every structure of `inputs` (files, directories, globs) and write `output`:

    - CSV (columns `CSV_COLUMNS`; energies in ``model.units``, ``file_energy`` in
      kcal/mol), one row per structure, skipped ones with their reason;
    - extended XYZ (a name ending in `EXTXYZ_SUFFIX`; geometry models only): every predicted
      structure with its energy (eV) and forces (eV/Angstrom), see `ExtxyzWriter`; each
      skipped one is a warning line with its reason.

    Raises:
        FileNotFoundError: an input that names nothing.
        ModelError: an input that cannot give the model its features, or an extended XYZ
            output for a model without forces.
    """
    files = expand_inputs(inputs)
    check_inputs(model, files)
    extxyz = output.lower().endswith(EXTXYZ_SUFFIX)
    if extxyz and not model.has_forces:
        raise ModelError(
            f"{output}: the extended XYZ output holds forces, which {model.source} (a model that does not take "
            "positions) cannot give; write a .csv"
        )
    if model.has_forces and not extxyz:
        log.info("the CSV holds energies; an output named *.extxyz holds the forces too")
    predicted = skipped = 0
    # tqdm shows itself only when the input takes more than a few seconds.
    progress = tqdm(unit=" structures", delay=2.0, disable=not options.show_progress, file=sys.stderr)
    with open(output, "w", newline="") as handle, progress:
        writer = ExtxyzWriter(handle, model) if extxyz else CsvWriter(handle)
        items = read_items(files, options.energy_unit, model.cutoff)
        for prediction in predict_items(model, items, options.batch_size):
            writer.write(prediction)
            predicted += prediction.energy is not None
            skipped += prediction.energy is None
            progress.update()
    return PredictSummary(predicted, skipped, output)


class CsvWriter:
    """Predictions as CSV rows (`CSV_COLUMNS`), the header first."""

    def __init__(self, handle):
        self._writer = csv.writer(handle)
        self._writer.writerow(CSV_COLUMNS)

    def write(self, prediction: Prediction) -> None:
        item, energy = prediction.item, prediction.energy
        self._writer.writerow([
            item.source,
            item.index,
            "" if item.graph is None else int(item.graph["n_waters"]),
            "" if energy is None else f"{energy:.6f}",
            "" if item.file_energy is None else f"{item.file_energy:.6f}",
            item.skipped or "",
        ])


class ExtxyzWriter:
    """Predictions of a geometry model as extended XYZ frames, in ASE's units: each
    structure's atoms at the positions the model saw (float32, Angstrom), its predicted
    ``energy`` (eV) and ``forces`` (eV/Angstrom) as calculator results (``ase.io.read``
    gives them back with ``get_potential_energy`` and ``get_forces``), and in its info
    ``source``, ``index``, ``n_waters``, ``energy_unit="eV"``, ``forces_unit="eV/Angstrom"``
    and ``file_energy`` (eV) when the input gave one. A skipped structure has no frame:
    it is a warning line naming it and the reason."""

    def __init__(self, handle, model: TrainedModel):
        self._handle = handle
        self._ev = model.ev_per_unit

    def write(self, prediction: Prediction) -> None:
        item = prediction.item
        if prediction.energy is None:
            log.warning("%s: structure %d skipped: %s", item.source, item.index, item.skipped)
            return
        graph = item.graph
        atoms = Atoms(symbols=[ATOM_VOCAB[t] for t in graph["atom"]], positions=graph["positions"])
        atoms.info.update(source=item.source, index=item.index, n_waters=int(graph["n_waters"]))
        atoms.info.update(energy_unit="eV", forces_unit="eV/Angstrom")
        if item.file_energy is not None:  # read in kcal/mol (see `read_items`), whatever the model's unit
            atoms.info["file_energy"] = item.file_energy * EV_PER_UNIT["kcal/mol"]
        atoms.calc = SinglePointCalculator(
            atoms, energy=prediction.energy * self._ev, forces=prediction.forces * self._ev
        )
        ase.io.write(self._handle, atoms, format="extxyz")


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m mpnn.predict: the command is mpnn-predict (or python -m mpnn.cli.predict)")
