"""The geometry of a structure as record features: positions, forces and the atom pairs
within a cutoff (see `mpnn.graph_format.features`, ``GEOMETRY``).

Models that see geometry (`mpnn.models.schnet`) compute every interatomic distance they use
from the positions along these pairs, so that forces are the gradient of the energy; the
pair list only says which distances matter. A structure whose geometry no model should
learn from is refused with the reason (`GeometryError`).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

# Default pair cutoff, Angstrom, chosen by measurement (benchmarks/cutoff_choice.py on
# 3,000 TIP4P clusters of 3-30 waters; RESULTS.md, "Geometry model against SchNetPack"): the
# TIP4P energy between waters farther apart than the cutoff, which an interaction does not
# see directly, varies across structures by 0.22 / 0.098 / 0.035 / 0.015 kcal/mol per water
# (standard deviation) at 5 / 6 / 7 / 8 Angstrom, for 29 / 39 / 48 / 55 pairs per atom. 7 is
# the smallest cutoff whose unseen spread is about the accuracy aimed at (0.03 kcal/mol
# per water), at 1.24x the pairs of 6. The model's cutoff function takes each pair
# smoothly to zero there (`mpnn.models.continuous_filter.CosineCutoff`).
DEFAULT_CUTOFF = 7.0
# Atoms closer than this are a broken structure (overlapping atoms, duplicated lines, a
# unit error in the coordinates), not chemistry: the shortest bond of any molecule, H-H in
# H2, is 0.74 Angstrom, and O-H in water 0.96.
MIN_DISTANCE = 0.5  # Angstrom
# Most neighbours an atom may have within the cutoff. Liquid water has about 0.1 atoms per
# cubic Angstrom, so about 140 atoms within 7 Angstrom; well above that is not a molecular
# structure but a unit error or a misplaced cutoff, and would cost memory quadratic in the
# cutoff.
MAX_NEIGHBOURS = 360


class GeometryError(ValueError):
    """A structure whose geometry cannot become a record (the message says why)."""


def geometry_features(
    atoms: Atoms, cutoff: float, forces: np.ndarray | None = None, with_forces: bool = False
) -> dict[str, np.ndarray]:
    """The geometry features of one structure.

    Args:
        atoms: the structure, positions in Angstrom (not periodic).
        cutoff: pair cutoff, Angstrom.
        forces: ``[n_atom, 3]`` forces in the target's unit per Angstrom, or None.
        with_forces: the record must carry forces (a structure without them is refused).

    Returns:
        ``positions [n_atom, 3]`` (Angstrom, float32), ``n_pair``, ``pair_connectivity
        [n_pair, 2]`` (receiver, sender; both directions, sorted by receiver, then sender)
        and with `with_forces` ``forces [n_atom, 3]``.

    Raises:
        GeometryError: a periodic cell, two atoms closer than `MIN_DISTANCE`, an atom with
            more than `MAX_NEIGHBOURS` neighbours within `cutoff`, or (with `with_forces`)
            forces missing, of the wrong shape or not finite.
    """
    # Imported here: scipy costs about 0.2 s, which workers converting tutorial records
    # (no coordinates) never pay.
    from scipy.spatial import cKDTree

    if atoms.pbc.any():
        raise GeometryError("periodic cell: geometry records are made of finite clusters only")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    tree = cKDTree(positions)
    close = tree.query_pairs(MIN_DISTANCE, output_type="ndarray")
    if len(close):
        i, j = close[0]
        distance = float(np.linalg.norm(positions[i] - positions[j]))
        raise GeometryError(
            f"atoms {i} and {j} are {distance:.3f} Angstrom apart, closer than the floor of {MIN_DISTANCE} Angstrom"
        )
    a, b = tree.query_pairs(cutoff, output_type="ndarray").T.reshape(2, -1)  # a < b
    receivers = np.concatenate([a, b])
    senders = np.concatenate([b, a])
    neighbours = np.bincount(receivers, minlength=len(atoms))
    if len(neighbours) and neighbours.max() > MAX_NEIGHBOURS:
        atom = int(neighbours.argmax())
        raise GeometryError(
            f"atom {atom} has {int(neighbours[atom])} neighbours within {cutoff} Angstrom, more than the budget "
            f"of {MAX_NEIGHBOURS} (wrong coordinate unit, or a condensed phase?)"
        )
    order = np.lexsort((senders, receivers))
    features = {
        "positions": positions.astype(np.float32),
        "n_pair": np.int64(len(order)),
        "pair_connectivity": np.stack([receivers, senders], axis=1)[order].astype(np.int64),
    }
    if with_forces:
        features["forces"] = checked_forces(forces, len(atoms))
    return features


def checked_forces(forces: np.ndarray | None, n_atom: int) -> np.ndarray:
    """`forces` as float32 ``[n_atom, 3]``.

    Raises:
        GeometryError: none, of another shape, or not finite.
    """
    if forces is None:
        raise GeometryError("no forces (the data set has forces: every structure needs them)")
    forces = np.asarray(forces, dtype=np.float64)
    if forces.shape != (n_atom, 3):
        raise GeometryError(f"forces of shape {list(forces.shape)}, expected [{n_atom}, 3]")
    if not np.all(np.isfinite(forces)):
        raise GeometryError("non-finite forces")
    return forces.astype(np.float32)
