"""mpnn-hpc: message-passing neural networks on molecular graphs, trained data-parallel with
Horovod (TensorFlow 2.15) or tf.distribute (TensorFlow 2.15 or the current one, 2.21).

The public API, for notebooks and scripts (each name is documented where it is defined)::

    import mpnn

    options = mpnn.WaterOptions(mpnn.OutputOptions("work/water", test_every=10, fractions=(0.9, 0.1, 0.0)))
    manifest = mpnn.prepare_water(["data/samples/water/water_clusters.proto.gz"], options)
    result = mpnn.train(mpnn.TrainConfig(data="work/water", run_dir="runs/mine", epochs=20))
    model = mpnn.load_trained("runs/mine")          # a run directory, its model.keras or an export

Importing ``mpnn`` imports none of them: each is imported when first used (PEP 562), so the
converters and their worker processes, which import ``mpnn.graph_format``, stay free of
TensorFlow.
"""

__version__ = "0.1.0"

import importlib as _importlib
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

# Public name -> the module that defines it.
_PUBLIC = {
    # preparing data
    "prepare_water": "data_prep.prep_water",
    "WaterOptions": "data_prep.prep_water",
    "prepare_pdbbind": "data_prep.prep_pdbbind",
    "PdbbindOptions": "data_prep.prep_pdbbind",
    "OutputOptions": "data_prep.pipeline",
    "Manifest": "mpnn.graph_format.manifest",
    # training
    "train": "mpnn.training",
    "RunResult": "mpnn.training",
    "TrainConfig": "mpnn.config",
    "manifest_dataset": "mpnn.data",
    # reading a run and using its model
    "RunDir": "mpnn.rundir",
    "load_trained": "mpnn.predict",
    "predict_files": "mpnn.predict",
    "PredictOptions": "mpnn.predict",
    "MPNNCalculator": "mpnn.ase",
    "export_run": "mpnn.export",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mpnn' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
