"""mpnn-hpc: message-passing neural networks on molecular graphs, trained data-parallel with
Horovod (TensorFlow 2.15) or tf.distribute (TensorFlow 2.15 or the current one, 2.21)."""

__version__ = "0.1.0"

import importlib.util as _importlib_util
import os as _os

# TensorFlow's C++ INFO lines (oneDNN, CPU features, grappler) drown our own output;
# warnings and errors still show. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# On TensorFlow 2.16+ `tf.keras` is Keras 3 unless this is set before TensorFlow is imported;
# with it, `tf.keras` is tf-keras (the Keras 2 API our layers, training and saving are written
# for; ARCHITECTURE.md, "Keras on the current TensorFlow"). Only where tf-keras is installed:
# TensorFlow 2.15 reads the variable too, and fails without tf-keras.
if _importlib_util.find_spec("tf_keras") is not None:
    _os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
