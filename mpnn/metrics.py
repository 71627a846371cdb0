"""Regression metrics over a whole set: MAE, RMSE, R^2 and Pearson r.

Computed from the complete arrays of one evaluation (all ranks' predictions gathered), never
as a mean of per-rank values.
"""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE and RMSE (target units), R^2 = 1 - SS_res / SS_tot, and Pearson r
    (covariance over the product of standard deviations)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"need two equal-length 1-D arrays, got {y_true.shape} and {y_pred.shape}")
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


def mae_by_group(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float]]:
    """MAE and count per group value (e.g. per number of waters), keys as strings."""
    out = {}
    for group in np.unique(groups):
        mask = groups == group
        out[str(int(group))] = {
            "count": int(mask.sum()),
            "mae": float(np.mean(np.abs(np.asarray(y_pred)[mask] - np.asarray(y_true)[mask]))),
        }
    return out
