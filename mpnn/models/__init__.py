"""Model families (one module each, with a ``build_*`` function) and model loading."""

from __future__ import annotations

import tensorflow as tf
from nfp.layers import RBFExpansion

import mpnn.layers  # noqa: F401  (registers our layers with Keras)


def load_model(path: str) -> tf.keras.Model:
    """Load a model saved by `mpnn-train` (``model.keras``) for prediction."""
    return tf.keras.models.load_model(path, custom_objects={"RBFExpansion": RBFExpansion}, compile=False)
