"""Regression metrics over a whole set, and the within-group metrics that design needs.

Computed from the complete arrays of one evaluation (all ranks' predictions gathered), never
as a mean of per-rank values.

Headline figures (MAE, R^2, Pearson r) of water-cluster energies are dominated by cluster
size: energy grows by about 10.5 kcal/mol per water. A design search compares structures
of one size and rewards the lowest energy, so `group_metrics` reports, per group (the
manifest's ``group``, for water ``n_waters``): the MAE, the Spearman rank correlation
within the group, and the MAE and mean signed error (prediction - truth) on the lowest and
the highest `TAIL_FRACTION` of the group by true target. Undefined values (a group too
small to rank) are None, so that ``metrics.json`` stays valid JSON.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

# Share of each group, by true target, in its low and high tails (at least one record).
TAIL_FRACTION = 0.05
# Fewest records for which a group gets a Spearman correlation, and that a group needs to
# be the "worst group" of a summary: the standard error of a rank correlation is about
# 1 / sqrt(n - 1), 0.33 at n = 10, so smaller groups would only add noise.
MIN_GROUP_RECORDS = 10
# Per-group quantities summarised over the groups, and which direction is worse.
_SUMMARISED = {
    "mae": "max",
    "spearman": "min",
    "low_tail_mae": "max",
    "low_tail_bias": "abs",
    "high_tail_mae": "max",
    "high_tail_bias": "abs",
}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE and RMSE (target units), R^2 = 1 - SS_res / SS_tot, and Pearson r
    (covariance over the product of standard deviations)."""
    y_true, y_pred = _pair(y_true, y_pred)
    error = y_pred - y_true
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    ss_res = float(np.sum(error**2))
    covariance = float(np.mean((y_true - y_true.mean()) * (y_pred - y_pred.mean())))
    spread = float(y_true.std() * y_pred.std())
    return {
        "count": int(len(y_true)),
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "pearson_r": covariance / spread if spread > 0 else float("nan"),
    }


def per_member_mae(y_true: np.ndarray, y_pred: np.ndarray, members: np.ndarray) -> float:
    """Mean over records of ``|prediction - truth| / members`` (water: the energy error per
    water molecule, target units), the size-independent figure of extensive targets."""
    y_true, y_pred = _pair(y_true, y_pred)
    members = np.asarray(members, dtype=np.float64)
    return float(np.mean(np.abs(y_pred - y_true) / np.maximum(members, 1.0)))


def force_metrics(true: np.ndarray, predicted: np.ndarray, groups: np.ndarray) -> dict:
    """Force errors over atoms (target units per Angstrom).

    Args:
        true, predicted: ``[n_atoms, 3]`` forces.
        groups: ``[n_atoms]`` group of each atom's record (water: cluster size).

    Returns:
        ``{"count" (atoms), "mae", "rmse" (over all components), "by_component": {"x"|"y"|"z":
        {"mae", "rmse"}}, "by_group": {str(group): {"count", "mae", "rmse"}}}``.
    """
    true = np.asarray(true, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if true.shape != predicted.shape or true.ndim != 2 or true.shape[1] != 3 or len(true) == 0:
        raise ValueError(f"need two equal [n, 3] arrays of forces, got {true.shape} and {predicted.shape}")
    error = predicted - true
    groups = np.asarray(groups)

    def errors(values: np.ndarray) -> dict[str, float]:
        return {"mae": float(np.mean(np.abs(values))), "rmse": float(np.sqrt(np.mean(values**2)))}

    return {
        "count": int(len(true)),
        **errors(error),
        "by_component": {axis: errors(error[:, k]) for k, axis in enumerate("xyz")},
        "by_group": {
            str(int(group)): {"count": int((groups == group).sum()), **errors(error[groups == group])}
            for group in np.unique(groups)
        },
    }


def tail_errors(y_true: np.ndarray, y_pred: np.ndarray, fraction: float = TAIL_FRACTION) -> dict[str, dict]:
    """MAE and bias (mean of prediction - truth, target units) on the ``ceil(fraction * n)``
    records (at least one) with the lowest and with the highest true target.

    Returns ``{"low_tail": {"count", "mae", "bias"}, "high_tail": {...}}``. A model that
    pulls predictions toward the mean has a positive low-tail and a negative high-tail bias.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    if not 0 < fraction <= 0.5:
        raise ValueError(f"tail fraction must be in (0, 0.5], got {fraction}")
    k = max(1, math.ceil(fraction * len(y_true)))
    order = np.argsort(y_true, kind="stable")
    error = y_pred - y_true
    out = {}
    for name, picked in (("low_tail", order[:k]), ("high_tail", order[-k:])):
        out[name] = {
            "count": int(k),
            "mae": float(np.mean(np.abs(error[picked]))),
            "bias": float(np.mean(error[picked])),
        }
    return out


def spearman(y_true: np.ndarray, y_pred: np.ndarray, min_records: int = MIN_GROUP_RECORDS) -> float | None:
    """Spearman rank correlation (`scipy.stats.spearmanr`, ties get mean ranks), or None
    with fewer than `min_records` records or when either array is constant."""
    y_true, y_pred = _pair(y_true, y_pred)
    if len(y_true) < max(min_records, 2) or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return None
    return float(stats.spearmanr(y_true, y_pred).statistic)


def group_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    tail_fraction: float = TAIL_FRACTION,
    min_records: int = MIN_GROUP_RECORDS,
) -> dict:
    """Per-group metrics and their summary over the groups.

    Args:
        y_true, y_pred: ``[n]`` targets and predictions (target units, e.g. kcal/mol).
        groups: ``[n]`` integer group of each record (water: number of waters).
        tail_fraction: share of each group in its low and high tails (`tail_errors`).
        min_records: fewest records of a group with a Spearman correlation, and of a
            group that can be the worst one.

    Returns:
        ``{"by_group": {str(group): {"count", "mae", "spearman", "low_tail": {"count",
        "mae", "bias"}, "high_tail": {...}}}, "summary": {"tail_fraction",
        "min_records", "weighted": {quantity: value}, "worst": {quantity: {"group",
        "value"}}}}`` with quantities ``mae``, ``spearman``, ``low_tail_mae``,
        ``low_tail_bias``, ``high_tail_mae``, ``high_tail_bias``. ``weighted`` is the mean
        over the groups weighted by their record counts (over those where the quantity is
        defined); ``worst`` is the group with the largest MAE, the smallest Spearman, the
        largest absolute bias, among groups of at least `min_records` records (None if
        there is none). Undefined values are None.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    groups = np.asarray(groups)
    if groups.shape != y_true.shape:
        raise ValueError(f"need one group per record, got {groups.shape} for {y_true.shape}")
    by_group = {}
    for group in np.unique(groups):
        mask = groups == group
        truth, prediction = y_true[mask], y_pred[mask]
        by_group[str(int(group))] = {
            "count": int(mask.sum()),
            "mae": float(np.mean(np.abs(prediction - truth))),
            "spearman": spearman(truth, prediction, min_records),
            **tail_errors(truth, prediction, tail_fraction),
        }
    return {"by_group": by_group, "summary": _summary(by_group, tail_fraction, min_records)}


def _flat(row: dict) -> dict[str, float | None]:
    """The summarised quantities of one group's row."""
    return {
        "mae": row["mae"],
        "spearman": row["spearman"],
        "low_tail_mae": row["low_tail"]["mae"],
        "low_tail_bias": row["low_tail"]["bias"],
        "high_tail_mae": row["high_tail"]["mae"],
        "high_tail_bias": row["high_tail"]["bias"],
    }


def _summary(by_group: dict[str, dict], tail_fraction: float, min_records: int) -> dict:
    weighted, worst = {}, {}
    rows = [(group, row["count"], _flat(row)) for group, row in by_group.items()]
    for name, direction in _SUMMARISED.items():
        defined = [(group, count, flat[name]) for group, count, flat in rows if flat[name] is not None]
        total = sum(count for _, count, _ in defined)
        weighted[name] = sum(count * value for _, count, value in defined) / total if total else None
        candidates = [(g, value) for g, count, value in defined if count >= min_records]
        if not candidates:
            worst[name] = None
            continue
        key = {"max": lambda item: item[1], "min": lambda item: -item[1], "abs": lambda item: abs(item[1])}[direction]
        group, value = max(candidates, key=key)
        worst[name] = {"group": group, "value": value}
    return {"tail_fraction": tail_fraction, "min_records": min_records, "weighted": weighted, "worst": worst}


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"need two equal-length 1-D arrays, got {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred
