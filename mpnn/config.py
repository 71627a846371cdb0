"""Training configuration: one dataclass, filled from defaults < ``--config`` file < flags.

The same `TrainConfig` drives `mpnn-train`, the job scripts (through the CLI) and the
notebooks (which build it directly and call `mpnn.training.train`).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import yaml

from mpnn.cli_checks import UsageError, flag
from mpnn.rundir import default_run_dir


class Choice(str, enum.Enum):
    """The allowed values of a setting (the one source of its argparse ``choices`` and of
    `TrainConfig.validate`). A str, so that config.json keeps plain strings."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


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


# `TrainConfig` fields (and flags) that take one of a fixed set of values.
CHOICES: dict[str, type[Choice]] = {
    "batch_strategy": BatchStrategy,
    "lr_scaling": LrScaling,
    "lr_decay": LrDecay,
    "loss": Loss,
    "model": ModelName,
    "engine": Engine,
}
# Key of config.json that records the thread plan the run resolved (`mpnn.distributed.ThreadPlan`).
RESOLVED_THREAD_PLAN = "thread_plan"
# Key of config.json that records the engine the run trained with, and its TensorFlow and Keras.
RESOLVED_ENGINE = "engine_as_run"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (see ``mpnn-train --help`` for each field). Frozen:
    derive a changed copy with `dataclasses.replace`."""

    data: str = ""
    run_dir: str = ""
    model: str = "auto"
    model_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 32
    batch_size: int = 64
    batch_strategy: str = "dbs"
    learning_rate: float = 1e-3
    lr_scaling: str = "linear"
    warmup_epochs: int = 2
    lr_decay: str = "cosine"
    min_lr_fraction: float = 0.01
    loss: str = "auto"
    weight_decay: float | None = None
    ema_momentum: float | None = None
    early_stopping_patience: int = 0
    max_train_seconds: float = 0.0
    seed: int = 0
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    batch_cut: int = 0
    data_threads: int = 0
    parallel_calls: int = -1
    parallel_reads: int = -1
    shuffle_buffer: int = 100_000
    cache: bool = True
    cache_budget_gb: float = 0.0
    resume: bool = False
    elastic: bool = False
    engine: str = "auto"
    verbose: int = 2
    tensorboard: bool = False
    horovod_timeline: str = ""
    autotune: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        if not self.data:
            raise ValueError("no data: pass --data path/to/manifest.json")
        for name, allowed in CHOICES.items():
            check_choice(name, getattr(self, name), allowed)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.ema_momentum is not None and not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1), got {self.ema_momentum}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("intra_op_threads", "inter_op_threads", "batch_cut", "data_threads", "cache_budget_gb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0: automatic), got {getattr(self, name)}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a (possibly partial) dict, e.g. a ``--config`` file or ``config.json``
        (whose ``thread_plan`` and ``engine_as_run``, what the machine of that run chose and
        ran, are not settings)."""
        values = {key: value for key, value in values.items() if key not in (RESOLVED_THREAD_PLAN, RESOLVED_ENGINE)}
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}; known: {sorted(known)}")
        # Runs made before the batch cut left the model kept it among the model options (and
        # the choice of the fused computation, the only one left).
        options = dict(values.get("model_options") or {})
        legacy_cut = options.pop("parallel_shards", None)
        options.pop("fused_updates", None)
        values = {**values, "model_options": options}
        if legacy_cut is not None:
            values.setdefault("batch_cut", int(legacy_cut))
        return cls(**values)


def check_choice(name: str, value: Any, allowed: type[Choice]) -> None:
    """Raise ``ValueError`` in argparse's words (naming the flag of setting `name`) unless
    `value` is one of `allowed`, e.g. for a value of a ``--config`` file."""
    if value not in allowed.values():
        choices = ", ".join(map(repr, allowed.values()))
        raise UsageError(f"argument {flag(name)}: invalid choice: {value!r} (choose from {choices})")


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON or YAML configuration file into a dict."""
    with open(path) as handle:
        text = handle.read()
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}") from exc
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return values


# Flags: (name, type, help). Model flags map into the nested MPNNConfig.
_FLAGS: list[tuple[str, type, str]] = [
    ("data", str, "manifest.json of a prepared data set (or its directory)"),
    ("run_dir", str, "run directory (default: runs/<job id or time stamp>)"),
    ("model", str, "model family: mpnn, gat-lspe, or auto (water data: mpnn; pdbbind data: gat-lspe)"),
    ("epochs", int, "training epochs"),
    ("batch_size", int, "graphs per batch: per rank (dbs) or in total (gbs)"),
    ("batch_strategy", str, "dbs: constant per-device batch; gbs: constant global batch, split across ranks"),
    ("learning_rate", float, "base learning rate (before scaling by the rank count)"),
    ("lr_scaling", str, "how the learning rate grows with the global batch: linear, sqrt or none"),
    ("warmup_epochs", int, "epochs of linear warm-up to the scaled learning rate"),
    ("lr_decay", str, "cosine (to min_lr_fraction over the epochs), plateau (halve on a flat val_loss) or none"),
    ("min_lr_fraction", float, "final learning rate of the cosine decay, as a fraction of the initial one"),
    ("loss", str, "training loss: mae, mse, huber, or auto (the model's default: mpnn huber, gat-lspe mse)"),
    ("weight_decay", float, "decoupled weight decay of AdamW (default: the model's, gat-lspe 1e-4, mpnn 0)"),
    ("ema_momentum", float, "validate, checkpoint and save an exponential moving average of the weights with this "
     "momentum per step (e.g. 0.99; 0: off, the raw weights; default: the model's, 0 for both)"),
    ("early_stopping_patience", int, "stop after this many epochs without a better val_loss (0: off)"),
    ("max_train_seconds", float, "stop after the epoch that passes this many seconds of training (0: off)"),
    ("seed", int, "seed of weights initialisation and shuffling"),
    ("intra_op_threads", int, "TensorFlow intra-op threads per rank (0: chosen from the rank's cores, "
     "see mpnn.distributed.thread_plan)"),
    ("inter_op_threads", int, "TensorFlow inter-op threads per rank (0: 1 on one core, 2 on more, "
     "with training batches cut in two)"),
    ("batch_cut", int, "groups of whole graphs each training batch is cut into, for the inter-op threads to "
     "run at once (0: the thread plan's, 2 with 2+ inter-op threads on CPU, else 1); never part of the model"),
    ("data_threads", int, "tf.data threads per rank (0: cores / local ranks, or tf.data's default for one rank)"),
    ("parallel_calls", int, "parallel parse/merge calls of the loader (-1: AUTOTUNE)"),
    ("parallel_reads", int, "shard files read in parallel by the loader (-1: AUTOTUNE)"),
    ("shuffle_buffer", int, "records in the shuffle buffer"),
    ("engine", str, "distributed engine: horovod (horovodrun, mpirun, srun), tf-distribute (MultiWorkerMirrored"
     "Strategy, launched by mpnn-launch), or auto (tf-distribute under mpnn-launch, else horovod if installed)"),
    ("verbose", int, "Keras verbosity on rank 0 (0 silent, 1 progress bar, 2 one line per epoch)"),
    # Not "--timeline": horovodrun reads an ambiguous prefix of its own --timeline-* options
    # anywhere on its command line, also in the command it launches, and stops with an error.
    ("horovod_timeline", str, "write Horovod's timeline (Chrome trace of the gradient exchanges) to this file"),
]
# Architecture flags go into `model_options` and must exist in the chosen model's config.
_MODEL_FLAGS: list[tuple[str, type, str]] = [
    ("width", int, "model: features per node (and edge)"),
    ("message_steps", int, "mpnn: message-passing steps; schnet: interactions"),
    ("layers", int, "gat-lspe: GAT-LSPE layers"),
    ("activation", str, "mpnn: activation of the update MLPs"),
    ("dropout", float, "model: dropout rate"),
    ("readout_hidden", int, "mpnn, schnet: hidden units of the per-atom energy readout MLP (mpnn: 0, a linear readout)"),
    ("rbf_bins", int, "mpnn, schnet: Gaussians of the distance expansion"),
    ("force_weight", float, "schnet: weight of the force term of the loss (per force component) against the energy "
     "term (per atom), for records with forces"),
    ("edge_updates", bool, "mpnn: update the bond states at every message step (--no-edge-updates: bond states "
     "stay their type (and distance) embedding, about half the cost per step)"),
]


def build_parser(prog: str = "mpnn-train", exit_on_error: bool = True) -> argparse.ArgumentParser:
    """The flags of ``mpnn-train``; with `exit_on_error` False a bad value raises
    ``argparse.ArgumentError`` (one line naming the flag) instead of exiting."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train an MPNN on prepared graph records, single process or under horovodrun/mpirun.",
        argument_default=argparse.SUPPRESS,
        exit_on_error=exit_on_error,
    )
    parser.add_argument("--config", help="JSON or YAML file of settings; flags override it")
    for name, kind, help_text in _FLAGS + _MODEL_FLAGS:
        flag_name = f"--{name.replace('_', '-')}"
        if kind is bool:  # --name / --no-name
            parser.add_argument(flag_name, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
            continue
        choices = {"choices": CHOICES[name].values()} if name in CHOICES else {}
        parser.add_argument(flag_name, dest=name, type=kind, help=help_text, **choices)
    parser.add_argument("--cache", dest="cache", action="store_true", help="cache records in memory (default)")
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="read records from disk each epoch")
    parser.add_argument(
        "--cache-budget-gb",
        dest="cache_budget_gb",
        type=float,
        help="memory (GB) a rank's cache of training records may take; the cache switches itself off when the "
        "estimate is larger (0, the default: half of the available memory shared by the node's ranks)",
    )
    parser.add_argument(
        "--tensorboard", dest="tensorboard", action="store_true",
        help="rank 0 writes TensorBoard logs (losses, learning rate per epoch) to <run dir>/tensorboard",
    )
    parser.add_argument(
        "--autotune", dest="autotune", action="store_true",
        help="let Horovod tune its fusion buffer and cycle time (HOROVOD_AUTOTUNE), trials in <run dir>/autotune.csv",
    )
    parser.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        help="continue from the run directory's last complete checkpoint (start afresh if it has none); "
        "its config.json supplies the settings not given again",
    )
    parser.add_argument(
        "--elastic",
        dest="elastic",
        action="store_true",
        help="Horovod elastic training (under horovodrun --min-np/--max-np --host-discovery-script, Gloo): "
        "keep training when workers leave or join (see mpnn.elastic)",
    )
    return parser


def saved_run_config(given: dict[str, Any]) -> dict[str, Any]:
    """The settings of the run a ``--resume`` continues (its ``config.json``), or {} when the
    run directory (``--run-dir``, else the default, e.g. the job id's) has none yet."""
    path = os.path.join(given.get("run_dir") or default_run_dir(), "config.json")
    if not os.path.exists(path):
        return {}
    values = load_config_file(path)
    values["run_dir"] = os.path.dirname(path)
    return values


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse `argv` into a validated `TrainConfig` (defaults < --config file < flags)."""
    given = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = saved_run_config(given) if given.get("resume") else {}
    if "config" in given:
        values.update(load_config_file(given.pop("config")))
    model_values = dict(values.pop("model_options", {}) or {})
    for name, *_ in _MODEL_FLAGS:
        if name in given:
            model_values[name] = given.pop(name)
    values.update(given)
    values["model_options"] = model_values
    config = TrainConfig.from_dict(values)
    config.validate()
    return config
