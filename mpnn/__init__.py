"""mpnn-hpc: message-passing neural networks on molecular graphs, trained with Horovod."""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ INFO lines (oneDNN, CPU features, grappler) drown our own output;
# warnings and errors still show. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
