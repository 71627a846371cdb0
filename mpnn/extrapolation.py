"""Size extrapolation of water-cluster energies: a model's MAE per range of cluster sizes
beside a linear baseline on (waters, hydrogen bonds).

The baseline, ``energy ~ a * n_waters + b * n_hydrogen_bonds + c`` (kcal/mol), is fitted by
least squares on the training split of the data set the model was trained on; hydrogen
bonds are counted from the records' bond types (each bond is stored as two directed edges
of type ``hydrogen``). It is the bar a graph model has to clear beyond the trained sizes,
e.g. on the 28 putative global minima (3 to 30 waters) of ``data/samples/water/minima``::

    mpnn-prep-water data/samples/water/minima -o work/minima --fractions 0 0 1
    mpnn-evaluate --model RUN/model.keras --data work/minima --linear-baseline work/water
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mpnn.data import Manifest, ManifestError, manifest_dataset
from mpnn.predictions import Predictions

HYDROGEN_BOND = "hydrogen"
# Cluster sizes inside and beyond the tutorial data's 3 to 11 waters.
DEFAULT_RANGES = ((3, 11), (12, 30))


@dataclass(frozen=True)
class BondCounts:
    """Per record of a split: ``record_id [n]``, ``n_waters [n]``, ``n_hydrogen_bonds [n]``
    and the target ``energy [n]`` (kcal/mol)."""

    record_id: np.ndarray
    n_waters: np.ndarray
    n_hydrogen_bonds: np.ndarray
    energy: np.ndarray


def hydrogen_bond_counts(manifest: Manifest, split: str, batch_size: int = 1024) -> BondCounts:
    """Count the hydrogen bonds of every record of `split` (read on this rank alone)."""
    bonds = manifest.vocab["bond"]
    if HYDROGEN_BOND not in bonds or "n_waters" not in manifest.features:
        raise ManifestError(f"{manifest.path}: not water-cluster records (bond types {bonds})")
    hydrogen = bonds.index(HYDROGEN_BOND)
    ids, waters, counts, energies = [], [], [], []
    dataset, _ = manifest_dataset(manifest, split, batch_size, with_record_info=True)
    for inputs, target, report in dataset:
        receivers = inputs["connectivity"].numpy()[:, 0]
        edge_graph = inputs["node_graph_indices"].numpy()[receivers]
        is_hydrogen = inputs["bond"].numpy() == hydrogen
        directed = np.bincount(edge_graph[is_hydrogen], minlength=len(target))
        ids.append(report["record_id"].numpy().astype(str))
        waters.append(report["n_waters"].numpy())
        counts.append(directed // 2)
        energies.append(target.numpy().astype(np.float64))
    return BondCounts(*(np.concatenate(parts) for parts in (ids, waters, counts, energies)))


@dataclass(frozen=True)
class LinearBaseline:
    """``energy = per_water * n_waters + per_hydrogen_bond * n_hydrogen_bonds + constant``
    (kcal/mol)."""

    per_water: float
    per_hydrogen_bond: float
    constant: float

    @classmethod
    def fit(cls, counts: BondCounts) -> "LinearBaseline":
        """Least-squares fit on `counts` (e.g. a training split)."""
        design = np.stack([counts.n_waters, counts.n_hydrogen_bonds, np.ones(len(counts.energy))], axis=1)
        solution, *_ = np.linalg.lstsq(design.astype(np.float64), counts.energy, rcond=None)
        return cls(*(float(x) for x in solution))

    def predict(self, counts: BondCounts) -> np.ndarray:
        return self.per_water * counts.n_waters + self.per_hydrogen_bond * counts.n_hydrogen_bonds + self.constant


def range_metrics(
    predictions: Predictions, counts: BondCounts, baseline: LinearBaseline, ranges: Sequence[tuple[int, int]]
) -> dict:
    """MAE of the model and of `baseline` per inclusive range of cluster sizes.

    `predictions` and `counts` hold the same records (matched by record id). Returns
    ``{"baseline": {coefficients}, "ranges": [{"sizes": "3-11", "count", "model_mae",
    "baseline_mae"}]}``; MAEs of an empty range are None.
    """
    position = {rid: i for i, rid in enumerate(counts.record_id)}
    missing = [rid for rid in predictions.record_id if rid not in position]
    if missing or len(position) != len(counts.record_id):
        raise ValueError(f"predictions and bond counts do not hold the same records (e.g. {missing[:3]})")
    order = np.array([position[rid] for rid in predictions.record_id], dtype=np.int64)
    baseline_error = np.abs(baseline.predict(counts)[order] - predictions.y_true)
    model_error = np.abs(predictions.y_pred - predictions.y_true)
    rows = []
    for low, high in ranges:
        inside = (predictions.group >= low) & (predictions.group <= high)
        rows.append({
            "sizes": f"{low}-{high}" if high != low else str(low),
            "count": int(inside.sum()),
            "model_mae": float(model_error[inside].mean()) if inside.any() else None,
            "baseline_mae": float(baseline_error[inside].mean()) if inside.any() else None,
        })
    return {"baseline": vars(baseline), "ranges": rows}


def parse_ranges(texts: Sequence[str]) -> list[tuple[int, int]]:
    """``["3-11", "12-30"]`` -> ``[(3, 11), (12, 30)]``; a single number is a range of one."""
    ranges = []
    for text in texts:
        low, _, high = text.partition("-")
        try:
            bounds = (int(low), int(high or low))
        except ValueError:
            raise ValueError(f"size range {text!r} is not LOW-HIGH, e.g. 3-11") from None
        if bounds[0] > bounds[1]:
            raise ValueError(f"size range {text!r} is empty")
        ranges.append(bounds)
    return ranges


def format_ranges(report: dict, units: str) -> str:
    """Terminal table of `range_metrics`."""
    b = report["baseline"]
    lines = [
        f"{'n_waters':>8} {'n':>4} {'model MAE':>10} {'linear MAE':>11}   ({units})",
        *(
            f"{row['sizes']:>8} {row['count']:>4} {_number(row['model_mae']):>10} {_number(row['baseline_mae']):>11}"
            for row in report["ranges"]
        ),
        f"linear baseline fitted on the training split: {b['per_water']:.3f} per water "
        f"{b['per_hydrogen_bond']:+.3f} per hydrogen bond {b['constant']:+.3f}",
    ]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
