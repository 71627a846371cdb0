"""Predictions of a model for a set of records: the data type that evaluation produces and
that its reports (`mpnn.evaluate`, `mpnn.extrapolation`, `mpnn.training`) read.

NumPy only, so that a module which reads predictions need not import the one which makes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ForcePredictions:
    """Forces on every atom of a set of records (target units per Angstrom).

    Attributes:
        true, predicted: ``[n_atoms, 3]``.
        group: ``[n_atoms]``, the group of each atom's record (water: its cluster size).
    """

    true: np.ndarray
    predicted: np.ndarray
    group: np.ndarray

    @classmethod
    def concatenate(cls, parts: list["ForcePredictions"]) -> "ForcePredictions":
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("true", "predicted", "group")))


@dataclass
class Predictions:
    """Predictions for a set of records (arrays of equal length, target units), and the
    forces of its atoms for a model that sees geometry on records with forces."""

    record_id: np.ndarray
    group: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    forces: ForcePredictions | None = None

    @classmethod
    def concatenate(cls, parts: list["Predictions"]) -> "Predictions":
        arrays = (np.concatenate([getattr(p, name) for p in parts]) for name in ("record_id", "group", "y_true", "y_pred"))
        with_forces = [p.forces for p in parts if p.forces is not None]
        return cls(*arrays, forces=ForcePredictions.concatenate(with_forces) if with_forces else None)
