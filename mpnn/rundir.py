"""The run directory: where a training run writes its configuration, logs and results.

Layout (file names below): ``config.json``, ``host_info.json``, ``log.csv``,
``checkpoints/``, ``model.keras``, ``metrics.json``, ``test_predictions.csv``, and with
``--tensorboard`` / ``--autotune`` ``tensorboard/`` / ``autotune.csv``. Only rank 0 writes.
"""

from __future__ import annotations

import datetime as _dt
import os

from mpnn import host

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


def default_run_dir() -> str:
    """``runs/<job id>`` under a scheduler, else ``runs/<UTC time stamp>``."""
    job = host.job_id()
    if job:
        return os.path.join(RUNS_ROOT, job.split(".")[0])
    return os.path.join(RUNS_ROOT, _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S"))
