"""Import water-cluster graphs stored in the ExaLearn design tutorial's TFRecord format.

The tutorial (exalearn/design-tutorial, ``mpnn/profile-data``) stores one
`tf.train.Example` per cluster with int64 ``n_atom``, ``n_bond``, ``n_waters``, ``atom``
(0 = O, 1 = H), ``bond`` (0 = covalent, 1 = hydrogen), ``connectivity`` (flattened
[receiver, sender] pairs, both directions) and float ``energy`` (kcal/mol). There are no
coordinates, so the imported graphs have no ``distance`` feature.
"""

from __future__ import annotations

import os

import numpy as np

TUTORIAL_SUFFIXES = (".proto.gz", ".proto", ".tfrecord", ".tfrecord.gz")
_INT_FEATURES = ("n_atom", "n_bond", "n_waters", "atom", "bond", "connectivity")


def is_tutorial_file(path: str) -> bool:
    return path.endswith(TUTORIAL_SUFFIXES)


def count_records(path: str) -> int:
    """Number of records in a tutorial file (reads it once)."""
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(path, compression_type=_compression(path)).reduce(0, lambda n, _: n + 1))


def read_tutorial_graphs(path: str, start: int, stop: int) -> list[tuple[int, dict | str]]:
    """Records ``start`` to ``stop - 1`` of `path` as graph dicts (see `mpnn.schema`).

    Returns:
        ``(index, graph)`` pairs, or ``(index, reason)`` for a record that is not a valid
        graph (missing feature, inconsistent counts, out-of-range connectivity).
    """
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(path, compression_type=_compression(path)).skip(start).take(stop - start)
    out: list[tuple[int, dict | str]] = []
    for index, serialized in enumerate(dataset.as_numpy_iterator(), start=start):
        example = tf.train.Example.FromString(serialized)
        try:
            out.append((index, _to_graph(example, f"{os.path.basename(path)}:{index}")))
        except ValueError as exc:
            out.append((index, str(exc)))
    return out


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
    # The tutorial sorted by receiver; re-sort stably in case another writer did not.
    order = np.argsort(connectivity[:, 0], kind="stable")
    return {
        "record_id": record_id,
        "n_atom": np.int64(n_atom),
        "n_bond": np.int64(n_bond),
        "n_waters": np.int64(values["n_waters"][0]),
        "atom": values["atom"],
        "bond": values["bond"][order],
        "connectivity": connectivity[order],
        "energy": np.float32(energy[0]),
    }


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""
