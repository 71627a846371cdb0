"""The run directory: where a training run writes its configuration, logs and results, and
the one way to read it back (`RunDir`).

Layout (file names below): ``config.json``, ``host_info.json``, ``log.csv``,
``checkpoints/``, ``model.keras``, ``metrics.json``, ``test_predictions.csv``, and with
``--tensorboard`` / ``--autotune`` ``tensorboard/`` / ``autotune.csv``. Only rank 0 writes.

Every command that uses a trained model takes the same ``--model``: a run directory, its
``model.keras``, or an ``mpnn-export`` directory; `locate_model` says which it is.
TensorFlow-free.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Any, Literal

from mpnn import host
from mpnn.errors import InputError, require_path
from mpnn.graph_format.manifest import Manifest, ManifestError

RUNS_ROOT = "runs"
CONFIG_FILE = "config.json"
HOST_INFO_FILE = "host_info.json"
LOG_FILE = "log.csv"
CHECKPOINTS_DIRECTORY = "checkpoints"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
TENSORBOARD_DIRECTORY = "tensorboard"
AUTOTUNE_LOG = "autotune.csv"
# The JSON file beside an exported SavedModel (written by `mpnn.export`).
EXPORT_METADATA = "mpnn_export.json"
# What ``--model`` takes, in the words of the commands' messages.
MODEL_ARGUMENT = "a run directory of mpnn-train, its model.keras, or an mpnn-export directory"


def default_run_dir() -> str:
    """``runs/<job id>`` under a scheduler, else ``runs/<UTC time stamp>``."""
    job = host.job_id()
    if job:
        return os.path.join(RUNS_ROOT, job.split(".")[0])
    return os.path.join(RUNS_ROOT, _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S"))


@dataclass(frozen=True)
class RunDir:
    """A run directory of ``mpnn-train``, read: its files by name, each JSON file read and
    checked in one place.

    Attributes:
        path: the directory.
    """

    path: str

    def file(self, name: str) -> str:
        """The path of the run's file `name` (one of this module's ``*_FILE`` names)."""
        return os.path.join(self.path, name)

    @property
    def config_path(self) -> str:
        return self.file(CONFIG_FILE)

    @property
    def metrics_path(self) -> str:
        return self.file(METRICS_FILE)

    @property
    def model_path(self) -> str:
        return self.file(MODEL_FILE)

    @property
    def log_path(self) -> str:
        return self.file(LOG_FILE)

    def has_model(self) -> bool:
        return os.path.isfile(self.model_path)

    def has_metrics(self) -> bool:
        return os.path.isfile(self.metrics_path)

    def config(self) -> dict[str, Any]:
        """The run's settings (``config.json``).

        Raises:
            InputError: missing or unreadable.
        """
        return _read_json(self.config_path)

    def metrics(self) -> dict[str, Any]:
        """The run's results (``metrics.json``), written when training ends.

        Raises:
            InputError: missing (the run has not finished) or unreadable.
        """
        return _read_json(self.metrics_path, "has the run finished?")

    def host_info(self) -> dict[str, Any]:
        """The machine the run trained on (``host_info.json``).

        Raises:
            InputError: missing or unreadable.
        """
        return _read_json(self.file(HOST_INFO_FILE))

    def log_rows(self) -> list[dict[str, str]]:
        """The rows of ``log.csv`` (one per epoch), [] when there is none (yet) or it
        cannot be read."""
        try:
            with open(self.log_path, newline="") as handle:
                return list(csv.DictReader(handle))
        except OSError:
            return []

    def family(self) -> str | None:
        """The model family the run trained (``metrics.json``, else ``config.json``), None
        when neither says."""
        for read in (self.metrics, self.config):
            try:
                values = read()
            except InputError:
                continue
            # "model": the key of runs made before `TrainConfig.family`, and of metrics.json.
            name = values.get("family") or values.get("model")
            if name and name != "auto":
                return str(name)
        return None

    def manifest(self) -> Manifest | None:
        """The manifest of the run's data set: a ``manifest.json`` in the run directory,
        else the one of the data set ``config.json`` names; None when neither can be read."""
        candidates = [self.path]
        try:
            data = self.config().get("data")
        except InputError:
            data = None
        if data:
            candidates.append(data)
        for path in candidates:
            try:
                return Manifest.load(path)
            except (OSError, ManifestError):
                continue
        return None


ModelKind = Literal["run", "export"]


@dataclass(frozen=True)
class ModelLocation:
    """Where a ``--model`` points.

    Attributes:
        kind: ``"run"`` (a run directory, or its model file) or ``"export"`` (an
            ``mpnn-export`` directory).
        path: the run directory or the export directory.
        model_file: the Keras model file of a run (its ``model.keras``, or the file given).
    """

    kind: ModelKind
    path: str
    model_file: str = ""

    @property
    def run(self) -> RunDir:
        return RunDir(self.path)


def locate_model(path: str, flag: str = "--model") -> ModelLocation:
    """What the ``--model`` value `path` is: an export directory (it holds
    `EXPORT_METADATA`), a run directory holding `MODEL_FILE`, or a ``.keras`` file (its
    run directory is the directory it is in).

    Raises:
        InputError: `path` does not exist, or holds none of these (the message names it).
    """
    require_path(path, flag, MODEL_ARGUMENT)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, EXPORT_METADATA)):
            return ModelLocation("export", path)
        if os.path.isfile(os.path.join(path, MODEL_FILE)):
            return ModelLocation("run", path, os.path.join(path, MODEL_FILE))
        raise InputError(f"{path}: neither a run directory with {MODEL_FILE} nor an export with {EXPORT_METADATA}")
    if path.endswith(".keras"):
        return ModelLocation("run", os.path.dirname(path) or ".", path)
    raise InputError(f"{path}: not a model ({flag} takes {MODEL_ARGUMENT})")


def _read_json(path: str, hint: str = "") -> dict[str, Any]:
    """The JSON object in `path`; `InputError` naming it when it is missing or unreadable."""
    try:
        with open(path) as handle:
            values = json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file" + (f" ({hint})" if hint else "")) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(values).__name__}")
    return values
