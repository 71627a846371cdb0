"""Training configuration: one dataclass, filled from defaults < ``--config`` file < flags.

The same `TrainConfig` drives `mpnn-train`, the job scripts (through the CLI) and the
notebooks (which build it directly and call `mpnn.training.train`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, fields
from typing import Any

import yaml

from mpnn import settings
from mpnn.errors import InputError, UsageError
from mpnn.rundir import RunDir, default_run_dir
from mpnn.settings import (
    AT_LEAST_0, AT_LEAST_1, AUTOTUNE_OR_AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, Allowed, Choice, setting,
)

log = logging.getLogger(__name__)


class BatchStrategy(Choice):
    """dbs: constant per-device batch; gbs: constant global batch, split across ranks."""

    DBS = "dbs"
    GBS = "gbs"


class LrScaling(Choice):
    """How the learning rate grows with the global batch (`mpnn.distributed.scaled_learning_rate`)."""

    LINEAR = "linear"
    SQRT = "sqrt"
    NONE = "none"


class LrDecay(Choice):
    COSINE = "cosine"
    PLATEAU = "plateau"
    NONE = "none"


class Loss(Choice):
    """Training loss; auto: the model family's default (`mpnn.models.ModelFamily.loss`)."""

    AUTO = "auto"
    MAE = "mae"
    MSE = "mse"
    HUBER = "huber"


class Engine(Choice):
    """The distributed engine (`mpnn.engines`); auto: tf-distribute when launched for it
    (TF_CONFIG), else Horovod when installed, else tf-distribute."""

    HOROVOD = "horovod"
    TF_DISTRIBUTE = "tf-distribute"
    AUTO = "auto"


class ModelName(Choice):
    """Model family (`mpnn.models.FAMILIES`); auto: the default for the manifest's kind of data."""

    AUTO = "auto"
    MPNN = "mpnn"
    GAT_LSPE = "gat-lspe"
    SCHNET = "schnet"


# The key that named the model family before `TrainConfig.family` (still read, one release).
LEGACY_FAMILY_KEY = "model"
# Key of config.json that records the thread plan the run resolved (`mpnn.distributed.ThreadPlan`).
RESOLVED_THREAD_PLAN = "thread_plan"
# Key of config.json that records the engine the run trained with, and its TensorFlow and Keras.
RESOLVED_ENGINE = "engine_as_run"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; each field states its flag's help text and the
    values it allows (`mpnn.settings`), which ``mpnn-train``'s flags and `validate` read.
    Frozen: derive a changed copy with `dataclasses.replace`."""

    data: str = setting("", "manifest.json of a prepared data set (or its directory)")
    run_dir: str = setting("", "run directory (default: runs/<job id or time stamp>)")
    family: str = setting(
        "auto", "model family: mpnn, gat-lspe, schnet, or auto (water data: mpnn; pdbbind data: gat-lspe)",
        choices=ModelName.values(),
    )
    model_options: dict[str, Any] = setting(
        help="architecture options of the family (its flags: --width, ...)", flag=False, default_factory=dict
    )
    epochs: int = setting(32, "training epochs", AT_LEAST_1)
    batch_size: int = setting(64, "graphs per batch: per rank (dbs) or in total (gbs)", AT_LEAST_1)
    batch_strategy: str = setting(
        "dbs",
        "dbs: constant per-device batch; gbs: constant global batch, split across ranks",
        choices=BatchStrategy.values(),
    )
    learning_rate: float = setting(1e-3, "base learning rate (before scaling by the rank count)", POSITIVE)
    lr_scaling: str = setting(
        "linear", "how the learning rate grows with the global batch: linear, sqrt or none", choices=LrScaling.values()
    )
    warmup_epochs: int = setting(2, "epochs of linear warm-up to the scaled learning rate", AT_LEAST_0)
    lr_decay: str = setting(
        "cosine", "cosine (to min_lr_fraction over the epochs), plateau (halve on a flat val_loss) or none",
        choices=LrDecay.values(),
    )
    min_lr_fraction: float = setting(
        0.01, "final learning rate of the cosine decay, as a fraction of the initial one", FRACTION
    )
    loss: str = setting(
        "auto", "training loss: mae, mse, huber, or auto (the family's default: mpnn huber, gat-lspe and schnet mse)",
        choices=Loss.values(),
    )
    weight_decay: float | None = setting(
        None, "decoupled weight decay of AdamW (default: the family's, gat-lspe 1e-4, others 0)", NON_NEGATIVE
    )
    ema_momentum: float | None = setting(
        None,
        "validate, checkpoint and save an exponential moving average of the weights with this momentum per step "
        "(e.g. 0.99; 0: off, the raw weights; default: the family's, 0 for all)",
        Allowed(lambda v: 0 <= v < 1, "a number in [0, 1) (0: off)"),
    )
    early_stopping_patience: int = setting(
        0, "stop after this many epochs without a better val_loss (0: off)", AT_LEAST_0
    )
    max_train_seconds: float = setting(
        0.0, "stop after the epoch that passes this many seconds of training (0: off)",
        Allowed(lambda v: v >= 0, "a number >= 0 (0: no limit)"),
    )
    seed: int = setting(0, "seed of weights initialisation and shuffling")
    intra_op_threads: int = setting(
        0, "TensorFlow intra-op threads per rank (0: chosen from the rank's cores, see mpnn.distributed.thread_plan)",
        AT_LEAST_0,
    )
    inter_op_threads: int = setting(
        0, "TensorFlow inter-op threads per rank (0: 1 on one core, 2 on more, with training batches cut in two)",
        AT_LEAST_0,
    )
    batch_cut: int = setting(
        0,
        "groups of whole graphs each training batch is cut into, for the inter-op threads to run at once (0: the "
        "thread plan's, 2 with 2+ inter-op threads on CPU, else 1); never part of the model",
        AT_LEAST_0,
    )
    data_threads: int = setting(
        0, "tf.data threads per rank (0: cores / local ranks, or tf.data's default for one rank)", AT_LEAST_0
    )
    parallel_calls: int = setting(-1, "parallel parse/merge calls of the loader (-1: AUTOTUNE)", AUTOTUNE_OR_AT_LEAST_1)
    parallel_reads: int = setting(
        -1, "shard files read in parallel by the loader (-1: AUTOTUNE)", AUTOTUNE_OR_AT_LEAST_1
    )
    shuffle_buffer: int = setting(100_000, "records in the shuffle buffer", AT_LEAST_1)
    cache: bool = setting(True, "cache records in memory (--no-cache: read records from disk each epoch)")
    cache_budget_gb: float = setting(
        0.0,
        "memory (GB) a rank's cache of training records may take; the cache switches itself off when the estimate "
        "is larger (0, the default: half of the available memory shared by the node's ranks)",
        NON_NEGATIVE,
    )
    resume: bool = setting(
        False,
        "continue from the run directory's last complete checkpoint (start afresh if it has none); its config.json "
        "supplies the settings not given again",
    )
    elastic: bool = setting(
        False,
        "Horovod elastic training (under horovodrun --min-np/--max-np --host-discovery-script, Gloo): keep training "
        "when workers leave or join (see mpnn.engines.horovod_elastic)",
    )
    engine: str = setting(
        "auto",
        "distributed engine: horovod (horovodrun, mpirun, srun), tf-distribute (MultiWorkerMirroredStrategy, "
        "launched by mpnn-launch), or auto (tf-distribute under mpnn-launch, else horovod if installed)",
        choices=Engine.values(),
    )
    verbose: int = setting(
        2, "Keras verbosity on rank 0 (0 silent, 1 progress bar, 2 one line per epoch)",
        Allowed(lambda v: v in (0, 1, 2), "0, 1 or 2"),
    )
    tensorboard: bool = setting(
        False, "rank 0 writes TensorBoard logs (losses, learning rate per epoch) to <run dir>/tensorboard"
    )
    # Not "--timeline": horovodrun reads an ambiguous prefix of its own --timeline-* options
    # anywhere on its command line, also in the command it launches, and stops with an error.
    horovod_timeline: str = setting(
        "", "write Horovod's timeline (Chrome trace of the gradient exchanges) to this file"
    )
    autotune: bool = setting(
        False, "let Horovod tune its fusion buffer and cycle time (HOROVOD_AUTOTUNE), trials in <run dir>/autotune.csv"
    )

    def validate(self) -> None:
        """Raise `UsageError` naming the flag of the first invalid setting (`mpnn.settings`);
        the model options are checked by the family (`mpnn.models.model_config`)."""
        if not self.data:
            raise UsageError("argument --data: required (a prepared data set: its directory or manifest.json)")
        settings.check(self)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a (possibly partial) dict, e.g. a ``--config`` file or ``config.json``
        (whose ``thread_plan`` and ``engine_as_run``, what the machine of that run chose and
        ran, are not settings)."""
        values = {key: value for key, value in values.items() if key not in (RESOLVED_THREAD_PLAN, RESOLVED_ENGINE)}
        values = with_family(values)  # config.json of earlier runs, and config files written for them
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"unknown configuration keys {sorted(unknown)}; known: {sorted(known)}")
        # Runs made before the batch cut left the model kept it among the model options (and
        # the choice of the fused computation, the only one left).
        options = dict(values.get("model_options") or {})
        legacy_cut = options.pop("parallel_shards", None)
        options.pop("fused_updates", None)
        values = {**values, "model_options": options}
        if legacy_cut is not None:
            values.setdefault("batch_cut", int(legacy_cut))
        return cls(**values)


def with_family(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (settings by name) with the model family under ``family``; files written
    before the key had its name (still read, one release) call it `LEGACY_FAMILY_KEY`, and
    a ``family`` beside it wins."""
    values = dict(values)
    if LEGACY_FAMILY_KEY in values:
        legacy = values.pop(LEGACY_FAMILY_KEY)
        values.setdefault("family", legacy)
    return values


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON or YAML configuration file into a dict.

    Raises:
        InputError: the file is missing, unreadable, not JSON/YAML, or not a mapping.
    """
    kind = "JSON" if path.endswith(".json") else "YAML"
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the configuration file ({exc.strerror or exc})") from exc
    try:
        values = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not valid {kind}: {exc}") from exc
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return values


def saved_run_config(run_dir: str) -> dict[str, Any]:
    """The settings of the run a ``--resume`` continues (its ``config.json``, with its
    ``run_dir``), or {} when the run directory (`run_dir`, else the default, e.g. the job
    id's) has none yet."""
    run = RunDir(run_dir or default_run_dir())
    if not os.path.exists(run.config_path):
        return {}
    return {**run.config(), "run_dir": run.path}


def config_from_values(given: dict[str, Any], model_option_names: frozenset[str]) -> TrainConfig:
    """A validated `TrainConfig` from the settings a user `given` (by field name, e.g. the
    parsed flags; ``config``: a file of settings; the names of `model_option_names` go into
    ``model_options``), over the saved settings of the run with ``resume``, over the defaults:
    defaults < the resumed run's config.json < the ``config`` file < `given`.

    Raises:
        UsageError: a setting out of its range or choices (naming its flag).
        InputError: a ``config`` file that cannot be read.
    """
    given = dict(given)
    values: dict[str, Any] = saved_run_config(given.get("run_dir", "")) if given.get("resume") else {}
    if "config" in given:
        path = given.pop("config")
        from_file = load_config_file(path)
        if LEGACY_FAMILY_KEY in from_file:  # what the user can change; a resumed run's config.json is not
            log.warning("%s: the key %r is deprecated for the model family, use 'family'", path, LEGACY_FAMILY_KEY)
        values.update(from_file)
    model_values = dict(values.pop("model_options", {}) or {})
    for name in model_option_names & set(given):
        model_values[name] = given.pop(name)
    values.update(given)
    values["model_options"] = model_values
    config = TrainConfig.from_dict(values)
    config.validate()
    return config
