"""Import water-cluster graphs stored in the ExaLearn design tutorial's TFRecord format.

The tutorial (exalearn/design-tutorial, ``mpnn/profile-data``) stores one
`tf.train.Example` per cluster with int64 ``n_atom``, ``n_bond``, ``n_waters``, ``atom``
(0 = O, 1 = H), ``bond`` (0 = covalent, 1 = hydrogen), ``connectivity`` (flattened
[receiver, sender] pairs, both directions) and float ``energy`` (kcal/mol). There are no
coordinates, so the imported graphs have no ``distance`` feature.

The tutorial's writer sorted ``connectivity`` by receiver but left ``bond`` in its original
order, so in its file the bond types do not belong to the edges they stand beside (an O
then appears to have three covalent bonds). The importer checks every record; when the
types are inconsistent and the atoms come as O, H, H per water (as in the tutorial's
data), it re-derives them (covalent = both ends in the same water) and says so in the
record's note, which the manifest counts.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from mpnn.graph_format.example import Example

_INT_FEATURES = ("n_atom", "n_bond", "n_waters", "atom", "bond", "connectivity")

REPAIRED_BOND_TYPES = "bond types re-derived from the O,H,H atom order (they disagreed with the connectivity)"


def tutorial_graph(serialized: bytes, record_id: str) -> dict:
    """The graph dict (see `mpnn.graph_format.features`) of one serialised tutorial record.

    A repaired graph has a ``"note"`` entry.

    Raises:
        ValueError: the record is not a valid graph (not an Example, missing feature,
            inconsistent counts, out-of-range connectivity, bond types that cannot be made
            consistent).
    """
    try:
        example = Example.FromString(serialized)
    except DecodeError as exc:
        raise ValueError(f"not a tf.train.Example: {exc}") from exc
    return _to_graph(example, record_id)


def _to_graph(example, record_id: str) -> dict:
    features = example.features.feature
    values = {}
    for name in (*_INT_FEATURES, "energy"):
        if name not in features:
            raise ValueError(f"record has no feature {name!r}")
    for name in _INT_FEATURES:
        values[name] = np.array(features[name].int64_list.value, dtype=np.int64)
    energy = list(features["energy"].float_list.value)
    if len(energy) != 1:
        raise ValueError(f"record has {len(energy)} energy values")
    n_atom, n_bond = int(values["n_atom"][0]), int(values["n_bond"][0])
    connectivity = values["connectivity"].reshape(-1, 2) if values["connectivity"].size % 2 == 0 else None
    if (
        len(values["atom"]) != n_atom
        or len(values["bond"]) != n_bond
        or connectivity is None
        or len(connectivity) != n_bond
    ):
        raise ValueError("atom, bond or connectivity lengths disagree with n_atom / n_bond")
    if connectivity.size and (connectivity.min() < 0 or connectivity.max() >= n_atom):
        raise ValueError("connectivity refers to atoms outside the graph")
    # The tutorial sorted by receiver; re-sort stably in case another writer did not.
    order = np.argsort(connectivity[:, 0], kind="stable")
    connectivity, bond = connectivity[order], values["bond"][order]
    note = None
    if not covalent_bonds_consistent(values["atom"], connectivity, bond):
        bond = bond_types_from_water_order(values["atom"], connectivity)
        note = REPAIRED_BOND_TYPES
    graph = {
        "record_id": record_id,
        "n_atom": np.int64(n_atom),
        "n_bond": np.int64(n_bond),
        "n_waters": np.int64(values["n_waters"][0]),
        "atom": values["atom"],
        "bond": bond,
        "connectivity": connectivity,
        "energy": np.float32(energy[0]),
    }
    if note:
        graph["note"] = note
    return graph


def covalent_bonds_consistent(atom: np.ndarray, connectivity: np.ndarray, bond: np.ndarray) -> bool:
    """True when every covalent edge joins an O and an H, every O receives exactly two
    covalent edges and every H exactly one (atom: O = 0, H = 1; bond: covalent = 0)."""
    covalent = connectivity[bond == 0]
    if np.any(atom[covalent[:, 0]] == atom[covalent[:, 1]]):
        return False
    received = np.bincount(covalent[:, 0], minlength=len(atom))
    return bool(np.all(received[atom == 0] == 2) and np.all(received[atom == 1] == 1))


def bond_types_from_water_order(atom: np.ndarray, connectivity: np.ndarray) -> np.ndarray:
    """Bond types for atoms listed O, H, H per water: covalent (0) within a water,
    hydrogen (1) between waters.

    Raises:
        ValueError: when the atoms are not in that order or the result is inconsistent.
    """
    if len(atom) % 3 or not np.array_equal(atom, np.tile([0, 1, 1], len(atom) // 3)):
        raise ValueError("bond types disagree with the connectivity, and atoms are not in O,H,H order to repair them")
    bond = np.where(connectivity[:, 0] // 3 == connectivity[:, 1] // 3, 0, 1).astype(np.int64)
    if not covalent_bonds_consistent(atom, connectivity, bond):
        raise ValueError("bond types disagree with the connectivity and cannot be re-derived")
    return bond
