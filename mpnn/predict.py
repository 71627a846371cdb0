"""``mpnn-predict``: energies of water clusters from a trained model.

Reads anything ``mpnn-prep-water`` reads (XYZ, extended XYZ, ASE databases, tutorial
TFRecords; files, directories or globs) and writes one CSV row per structure. The graphs
are those of the converter and the loader, built by the same functions: the converter's
`data_prep.prep_water.task_graphs`, serialised with `serialize_graph`, parsed with
`mpnn.data.parse_spec` and merged with `mpnn.data.merge_batch`; so a structure is
predicted exactly as it would be after ``mpnn-prep-water`` and ``mpnn-evaluate``. Memory
stays bounded on long inputs: structures are read, predicted and written a batch at a time.

The model comes from a run directory of ``mpnn-train`` (``model.keras``, and the data
set's manifest for its vocabularies and statistics) or from an ``mpnn-export`` directory
(a TensorFlow SavedModel and `EXPORT_METADATA`); `load_trained` takes either, and
`mpnn.ase` and `mpnn.design` use the same `TrainedModel`.

Example::

    mpnn-predict --model runs/demo data/samples/water/minima -o minima.csv
"""

from __future__ import annotations

import argparse
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

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from data_prep.prep_water import plan_tasks, task_graphs
from data_prep.structures import KCAL_PER_MOL_PER, expand_inputs
from data_prep.tutorial_records import is_tutorial_file
from data_prep.water import ATOM_VOCAB, BOND_VOCAB
from mpnn import cli_checks
from mpnn.data import merge_batch, parse_spec
from mpnn.graph_format.example import serialize_graph
from mpnn.graph_format.features import REQUIRED, feature_dtypes
from mpnn.graph_format.manifest import Manifest, ManifestError

log = logging.getLogger("mpnn-predict")

# The JSON file beside an exported SavedModel (written by `mpnn.export`).
EXPORT_METADATA = "mpnn_export.json"
# eV per unit of the model's energies, for ASE (which works in eV).
EV_PER_UNIT = {"kcal/mol": 1.0 / KCAL_PER_MOL_PER["eV"], "eV": 1.0}
# Records of a tutorial file read at a time.
CSV_COLUMNS = ("file", "index", "n_waters", "predicted_energy", "file_energy", "skipped")


class ModelError(ValueError):
    """A model that cannot be used for the request (the message names the model and why)."""


@dataclass(frozen=True)
class TrainedModel:
    """A trained water-cluster energy model, from a run directory or an export.

    Attributes:
        source: the run directory or export directory it came from.
        uses_distance: whether the model reads the edge ``distance`` (Angstrom), which only
            inputs with coordinates provide; a topology model reads types and bonds only.
        units: unit of the predicted energies (the training target's, e.g. ``"kcal/mol"``).
        metadata: what the model was trained on: ``vocab``, ``target`` and
            ``target_stats`` of the data set's manifest (when it could be found), ``model``
            and ``architecture``.
        input_names: the entries of a merged batch the model takes.
        forward: merged batch (see `mpnn.data.merge_batch`; only `input_names`) -> ``[B]``
            energies in `units`.
    """

    source: str
    uses_distance: bool
    units: str
    metadata: dict[str, Any]
    input_names: tuple[str, ...]
    forward: Callable[[dict[str, tf.Tensor]], tf.Tensor] = field(repr=False)

    @property
    def record_features(self) -> tuple[str, ...]:
        """The record features a graph needs for this model (written and parsed as the
        loader does)."""
        return (*REQUIRED, *(("distance",) if self.uses_distance else ()))

    @property
    def ev_per_unit(self) -> float:
        """Factor from the model's energy unit to eV."""
        if self.units not in EV_PER_UNIT:
            raise ModelError(f"{self.source}: energies in {self.units!r}, which mpnn cannot convert to eV")
        return EV_PER_UNIT[self.units]

    def predict_graphs(self, graphs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Energies ``[len(graphs)]`` (in `units`) of graph dicts (see `mpnn.graph_format.features`), in one
        batch. Each graph needs the `record_features`."""
        if not graphs:
            return np.zeros(0, np.float32)
        dtypes = feature_dtypes(self.record_features)
        return self.predict_serialized([serialize_graph(graph, dtypes) for graph in graphs])

    def predict_serialized(self, records: Sequence[bytes]) -> np.ndarray:
        """Energies ``[len(records)]`` of serialised graph records holding the
        `record_features`, in one batch."""
        if not records:
            return np.zeros(0, np.float32)
        return self._predict_batch(tf.constant(list(records), tf.string)).numpy()

    @functools.cached_property
    def _predict_batch(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """Parse, merge and predict in one traced function (traced once: the input is a
        ``[None]`` string tensor)."""
        spec = parse_spec(self.record_features)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def predict(serialized: tf.Tensor) -> tf.Tensor:
            merged = merge_batch(tf.io.parse_example(serialized, spec))
            return self.forward({name: merged[name] for name in self.input_names})

        return predict


def load_trained(path: str) -> TrainedModel:
    """The model of a run directory (or its ``model.keras``) or of an ``mpnn-export``
    directory.

    Raises:
        ModelError: nothing loadable at `path`, or a model not trained on water clusters.
    """
    if os.path.isfile(os.path.join(path, EXPORT_METADATA)):
        return _load_export(path)
    run_dir = os.path.dirname(path) if path.endswith(".keras") else path
    if not os.path.isfile(os.path.join(run_dir, "model.keras")):
        raise ModelError(f"{path}: neither a run directory with model.keras nor an export with {EXPORT_METADATA}")
    return _load_run(run_dir)


def run_metadata(run_dir: str) -> dict[str, Any]:
    """What a run directory records of its training data: ``target`` (name, units) from
    ``metrics.json``, and ``vocab``, ``target_stats``, ``kind`` and ``features`` from the
    data set's manifest (``manifest.json`` in the run directory, else the one that
    ``config.json`` names) when it can be read; ``model`` and ``architecture``."""
    metadata: dict[str, Any] = {}
    for name in ("config.json", "metrics.json"):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            with open(path) as handle:
                metadata[name] = json.load(handle)
    config, metrics = metadata.pop("config.json", {}), metadata.pop("metrics.json", {})
    manifest = _run_manifest(run_dir, config)
    stats = manifest.target_stats if manifest else None
    return {
        "kind": manifest.kind if manifest else None,
        "target": metrics.get("target") or (dataclasses.asdict(manifest.target) if manifest else None),
        "vocab": manifest.vocab if manifest else None,
        "target_stats": dataclasses.asdict(stats) if stats else None,
        "data_features": manifest.feature_names if manifest else [],
        "manifest": manifest.path if manifest else None,
        "model": metrics.get("model") or config.get("model"),
        "architecture": metrics.get("architecture") or config.get("model_options"),
    }


def _run_manifest(run_dir: str, config: Mapping[str, Any]) -> Manifest | None:
    """The manifest in `run_dir`, else the one of the data set ``config.json`` names, or
    None when neither can be read."""
    candidates = [run_dir]
    if config.get("data"):
        candidates.append(config["data"])
    for path in candidates:
        try:
            return Manifest.load(path)
        except (OSError, ManifestError):
            continue
    return None


def check_water_metadata(source: str, metadata: Mapping[str, Any]) -> None:
    """Raise `ModelError` unless the model was trained on water clusters with this
    package's vocabularies (O = 0, H = 1; covalent = 0, hydrogen = 1)."""
    kind, vocab = metadata.get("kind"), metadata.get("vocab")
    if kind not in (None, "water"):
        raise ModelError(f"{source}: trained on {kind!r} data; this works on water clusters only")
    if vocab and (list(vocab.get("atom", [])) != list(ATOM_VOCAB) or list(vocab.get("bond", [])) != list(BOND_VOCAB)):
        raise ModelError(f"{source}: vocabularies {vocab} differ from the water graphs' {ATOM_VOCAB}, {BOND_VOCAB}")


def _load_run(run_dir: str) -> TrainedModel:
    from mpnn.models import load_model  # imports nfp; exports load without it

    metadata = run_metadata(run_dir)
    check_water_metadata(run_dir, metadata)
    target = metadata.get("target")
    if not target:
        raise ModelError(f"{run_dir}: no metrics.json and no readable data manifest, so the energy unit is unknown")
    model = load_model(os.path.join(run_dir, "model.keras"))
    return TrainedModel(
        source=run_dir,
        uses_distance="distance" in model.input_names,
        units=target["units"],
        metadata=metadata,
        input_names=tuple(model.input_names),
        forward=lambda inputs: model(inputs, training=False),
    )


def _load_export(directory: str) -> TrainedModel:
    with open(os.path.join(directory, EXPORT_METADATA)) as handle:
        metadata = json.load(handle)
    check_water_metadata(directory, metadata)
    loaded = tf.saved_model.load(directory)
    signature = loaded.signatures["serving_default"]
    inputs = tuple(metadata["inputs"])

    def forward(batch: dict[str, tf.Tensor]) -> tf.Tensor:
        return signature(**batch)["energy"]

    # Keep the loaded object alive as long as the function that uses its variables.
    forward.saved_model = loaded  # type: ignore[attr-defined]
    return TrainedModel(
        source=directory,
        uses_distance="distance" in inputs,
        units=metadata["target"]["units"],
        metadata=metadata,
        input_names=inputs,
        forward=forward,
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
    (distances from a topology-only tutorial file)."""
    if model.uses_distance:
        tutorial = [f for f in files if is_tutorial_file(f)]
        if tutorial:
            raise ModelError(
                f"{model.source} uses interatomic distances, but {tutorial[0]} holds topology-only "
                "tutorial records (no coordinates); use a model trained without distances"
            )


def read_items(files: Sequence[str], energy_unit: str = "kcal/mol") -> Iterator[Item]:
    """Every structure of `files` (see `expand_inputs`) as an `Item`, lazily and in order,
    its graph built by the converter's own `data_prep.prep_water.task_graphs`. A structure
    without an energy is still predicted."""
    for task in plan_tasks(files, energy_unit, with_distance=True):
        for index, graph, reason in task_graphs(task, energy_required=False):
            energy = None if graph is None or not math.isfinite(graph["energy"]) else float(graph["energy"])
            yield Item(task.path, index, graph, energy, reason)


def predict_items(model: TrainedModel, items: Iterable[Item], batch_size: int = 256) -> Iterator[tuple[Item, float | None]]:
    """``(item, predicted energy in model.units or None when skipped)`` in input order,
    predicting `batch_size` structures at a time."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    dtypes = feature_dtypes(model.record_features)
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, batch_size)):
        usable = [item for item in batch if item.graph is not None]
        energies = iter(model.predict_serialized([serialize_graph(item.graph, dtypes) for item in usable]))
        for item in batch:
            yield item, (float(next(energies)) if item.graph is not None else None)


@dataclass(frozen=True)
class PredictOptions:
    """Options of `predict_files` (see ``mpnn-predict --help``)."""

    batch_size: int = 256
    energy_unit: str = "kcal/mol"
    show_progress: bool = True


@dataclass(frozen=True)
class PredictSummary:
    """What `predict_files` did: structures predicted and skipped, and the CSV written."""

    predicted: int
    skipped: int
    output: str


def predict_files(model: TrainedModel, inputs: Sequence[str], output: str, options: PredictOptions = PredictOptions()) -> PredictSummary:
    """Predict every structure of `inputs` (files, directories, globs) and write the CSV
    `output` (columns `CSV_COLUMNS`; energies in ``model.units``, ``file_energy`` in
    kcal/mol), one row per structure, skipped ones with their reason.

    Raises:
        FileNotFoundError: an input that names nothing.
        ModelError: an input that cannot give the model its features.
    """
    files = expand_inputs(inputs)
    check_inputs(model, files)
    predicted = skipped = 0
    # tqdm shows itself only when the input takes more than a few seconds.
    progress = tqdm(unit=" structures", delay=2.0, disable=not options.show_progress, file=sys.stderr)
    with open(output, "w", newline="") as handle, progress:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for item, energy in predict_items(model, read_items(files, options.energy_unit), options.batch_size):
            writer.writerow([
                item.source,
                item.index,
                "" if item.graph is None else int(item.graph["n_waters"]),
                "" if energy is None else f"{energy:.6f}",
                "" if item.file_energy is None else f"{item.file_energy:.6f}",
                item.skipped or "",
            ])
            predicted += energy is not None
            skipped += energy is None
            progress.update()
    return PredictSummary(predicted, skipped, output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpnn-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="structure files, directories, globs or tutorial TFRecords")
    parser.add_argument("--model", required=True, help="run directory of mpnn-train (or its model.keras), or an mpnn-export directory")
    parser.add_argument("-o", "--output", default="predictions.csv", help="CSV file to write (default predictions.csv)")
    parser.add_argument("--batch-size", type=int, default=256, help="structures per model call (default 256)")
    parser.add_argument(
        "--energy-unit", choices=list(KCAL_PER_MOL_PER), default="kcal/mol", help="unit of energies in the inputs"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    cli_checks.check_arguments(parser, args, cli_checks.PREDICT_RANGES)
    options = PredictOptions(args.batch_size, args.energy_unit, not args.quiet)
    try:
        cli_checks.check_input_path(args.model, "--model", "a run directory of mpnn-train or an mpnn-export directory")
        model = load_trained(args.model)
        summary = predict_files(model, args.inputs, args.output, options)
    except (ModelError, cli_checks.InputError, OSError, ValueError) as exc:
        print(f"mpnn-predict: error: {exc}", file=sys.stderr)
        return 1
    print(f"predicted {summary.predicted}, skipped {summary.skipped} ({model.units}) -> {summary.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
