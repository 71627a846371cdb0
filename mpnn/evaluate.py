"""Evaluate a model on a whole split, exactly once whatever the rank count.

Each rank predicts its share of the split's records; the shares are gathered on every rank
(`hvd.allgather_object`), so the metrics come from the complete set of predictions. Data
sets with a group (the manifest's ``group``, water: ``n_waters``) also get the metrics of
`mpnn.metrics.group_metrics` (MAE, Spearman and tail errors within each group).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from mpnn import distributed
from mpnn.atomic import atomic_open
from mpnn.data import MODEL_NODE_EDGE_FEATURES, Manifest, manifest_dataset
from mpnn.errors import InputError
from mpnn.forces import energy_and_forces, takes_positions
from mpnn.metrics import force_metrics, group_metrics, per_member_mae, regression_metrics
from mpnn.models import batch_entries
from mpnn.predictions import ForcePredictions, Predictions
from mpnn.settings import AT_LEAST_1, setting



@dataclass(frozen=True)
class EvaluateOptions:
    """What ``mpnn-evaluate`` predicts: which split, how many records per model call."""

    split: str = setting("test", "split to evaluate (default test)")
    batch_size: int = setting(256, "records per model call (default 256)", AT_LEAST_1)


def check_records_fit(
    model: str,
    kind: str | None,
    vocab: dict[str, list[str]] | None,
    manifest: Manifest,
    type_counts: dict[str, int] | None = None,
) -> None:
    """Raise `InputError` when the records of `manifest` are of another kind (water,
    pdbbind) or use other vocabularies than the model's training data (`kind`, `vocab`;
    None: unknown, not checked), or, where the vocabularies are unknown (a model file
    without its run), other numbers of types than the model's embeddings take
    (`type_counts`, `mpnn.models.type_counts`): its type indices would mean other atoms and
    bonds, or none."""
    if kind is not None and kind != manifest.kind:
        raise InputError(f"{manifest.path}: {manifest.kind} records; {model} was trained on {kind} records")
    if vocab is not None and dict(vocab) != dict(manifest.vocab):
        raise InputError(
            f"{manifest.path}: vocabularies {dict(manifest.vocab)} differ from those {model} was trained with, {dict(vocab)}"
        )
    for name, count in (type_counts or {}).items():
        types = manifest.vocab.get(name)
        if types is not None and len(types) != count:
            raise InputError(
                f"{manifest.path}: {len(types)} {name} types {types}; {model} takes {count} (records of another "
                "kind or vocabulary than it was trained on)"
            )


def predict_split(
    model: tf.keras.Model, manifest: Manifest, split: str, batch_size: int, alone: bool = False
) -> Predictions:
    """Predict every record of `split` (with forces, for a model that sees geometry on
    records with forces); call on all ranks (it gathers across them), or with `alone` on
    one rank, which then predicts every record itself."""
    forward_forces = (lambda inputs: energy_and_forces(model, inputs)) if takes_positions(model) else None
    return predict_split_with(
        tuple(model.input_names), lambda inputs: model(inputs, training=False), manifest, split, batch_size,
        forward_forces=forward_forces, alone=alone,
    )  # fmt: skip


def predict_split_with(
    input_names: Sequence[str],
    forward: Callable[[dict[str, tf.Tensor]], tf.Tensor],
    manifest: Manifest,
    split: str,
    batch_size: int,
    forward_forces: Callable[[dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor]] | None = None,
    alone: bool = False,
) -> Predictions:
    """`predict_split` for any model given as functions (e.g. an ``mpnn-export``'s,
    `mpnn.predict.TrainedModel`): `forward` maps a merged batch of the entries
    `input_names` to energies ``[B]``; `forward_forces`, for a model that sees geometry, to
    energies and forces ``[N, 3]`` (target units per Angstrom); required for a model that
    takes ``positions``.

    Raises:
        InputError: the records lack a feature the model takes (e.g. ``distance`` in
            records prepared from structures without coordinates).
    """
    missing = [name for name in input_names if name in MODEL_NODE_EDGE_FEATURES and name not in manifest.features]
    if missing:
        raise InputError(
            f"{manifest.path}: its records have no {', '.join(missing)}, which the model takes: evaluate it on "
            "records prepared like those it was trained on"
        )
    rank, size = (0, 1) if alone else (distributed.rank(), distributed.size())
    # Forces only where there are forces to compare with (`batch_entries` asks for them only
    # for a model that sees geometry): no gradient pass for records without them.
    entries = batch_entries(input_names, manifest)
    with_forces = "forces" in entries
    dataset, _ = manifest_dataset(
        manifest, split, batch_size, rank=rank, size=size, with_record_info=True, entries=entries
    )
    # No autograph: the forward passes hold no control flow on tensors (as the training steps,
    # `mpnn.batch_cut.CutBatchTrainer`).
    if with_forces:
        call = tf.function(forward_forces, reduce_retracing=True, autograph=False)
    else:
        call = tf.function(lambda inputs: (forward(inputs), None), reduce_retracing=True, autograph=False)
    parts = []
    for inputs, target, info in dataset:
        energy, forces = call({name: inputs[name] for name in input_names})
        batch = _predictions(info, target.numpy(), energy.numpy())
        if with_forces:
            atom_group = tf.gather(info["n_waters"], inputs["node_graph_indices"]).numpy() if "n_waters" in info else (
                np.zeros(len(forces), np.int64)
            )
            batch.forces = ForcePredictions(inputs["forces"].numpy(), forces.numpy(), atom_group)
        parts.append(batch)
    local = Predictions.concatenate(parts)
    return local if alone else Predictions.concatenate(distributed.allgather_object(local, f"predictions_{split}"))


def _predictions(info: dict[str, tf.Tensor], y_true: np.ndarray, y_pred: np.ndarray) -> Predictions:
    """Bundle one batch; records without ids or groups get empty ids and group 0."""
    ids = info["record_id"].numpy().astype(str) if "record_id" in info else np.full(len(y_true), "")
    groups = info["n_waters"].numpy() if "n_waters" in info else np.zeros(len(y_true), np.int64)
    return Predictions(ids, groups, y_true, y_pred)


def split_targets(manifest: Manifest, split: str, batch_size: int = 1024) -> Predictions:
    """Targets and groups of every record of `split`, read on this rank alone
    (``y_pred`` is NaN)."""
    dataset, _ = manifest_dataset(manifest, split, batch_size, with_record_info=True)
    parts = [_predictions(info, target.numpy(), np.full(len(target), np.nan)) for _, target, info in dataset]
    return Predictions.concatenate(parts)


def split_metrics(predictions: Predictions, group: str | None) -> dict:
    """Metrics of one split (`regression_metrics`); with a `group` name also ``by_group``
    (per group: MAE, Spearman, tail errors) and ``group_summary`` (their weighted mean and
    worst group, with the group's name), from `group_metrics`; for water clusters the
    energy MAE per water (``mae_per_water``, overall and per group); with forces
    ``forces`` (`mpnn.metrics.force_metrics`)."""
    metrics = regression_metrics(predictions.y_true, predictions.y_pred)
    if group is not None:
        grouped = group_metrics(predictions.y_true, predictions.y_pred, predictions.group)
        metrics["by_group"] = grouped["by_group"]
        metrics["group_summary"] = {"name": group, **grouped["summary"]}
    if group == "n_waters":
        metrics["mae_per_water"] = per_member_mae(predictions.y_true, predictions.y_pred, predictions.group)
        for size, row in metrics["by_group"].items():
            row["mae_per_water"] = row["mae"] / int(size) if int(size) > 0 else None
    if predictions.forces is not None:
        forces = predictions.forces
        metrics["forces"] = force_metrics(forces.true, forces.predicted, forces.group)
    return metrics


def group_mean_baseline_mae(train: Predictions, test: Predictions) -> float:
    """Test MAE of predicting the mean training target of the record's group (for water:
    the mean energy of clusters of the same size); the bar the model has to beat."""
    means = {g: train.y_true[train.group == g].mean() for g in np.unique(train.group)}
    fallback = train.y_true.mean()
    guess = np.array([means.get(g, fallback) for g in test.group])
    return float(np.mean(np.abs(guess - test.y_true)))


def write_predictions_csv(path: str, predictions: Predictions, group_name: str) -> None:
    """Write `predictions` to the CSV `path` (atomically: `mpnn.atomic`)."""
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", group_name, "true", "predicted", "error"])
        for rid, group, true, pred in zip(
            predictions.record_id, predictions.group, predictions.y_true, predictions.y_pred
        ):
            writer.writerow([rid, int(group), f"{true:.6g}", f"{pred:.6g}", f"{pred - true:.6g}"])


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m mpnn.evaluate: the command is mpnn-evaluate (or python -m mpnn.cli.evaluate)")
