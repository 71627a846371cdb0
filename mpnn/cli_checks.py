"""Checks shared by the commands (``mpnn-train``, ``mpnn-evaluate``, the converters,
``mpnn-predict`` / ``-export`` / ``-design``): flag values, input paths, and the exit status
and one-line message of each kind of user error.

- Misuse of a flag (a value outside its allowed range, a batch that does not split across
  the ranks): `UsageError`, exit 2, ``prog: error: argument --flag: ...`` as argparse does.
- A problem with an input the user can fix (a missing path, a data set without manifest,
  a damaged shard, model file or checkpoint): exit 1, one line naming the file.
- Anything else is a bug: its traceback is kept.

Importing this module does not import TensorFlow (the converters use it; their workers
must stay TensorFlow-free): the functions that need it import it when called.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from mpnn import verify
from mpnn.atomic import WriteError
from mpnn.graph_format.manifest import ManifestError
from mpnn.run_lock import RunLockedError

if TYPE_CHECKING:
    import tensorflow as tf


class UsageError(ValueError):
    """A flag given a value it does not allow (the message names the flag); exit 2."""


class InputError(RuntimeError):
    """An input file or directory that cannot be used (the message names it); exit 1."""



def user_errors() -> tuple[type[Exception], ...]:
    """Errors the user can fix, each reported in one line with exit status 1: bad inputs, a
    failed write (a full disk, a read-only run directory), a run directory in use, a
    diverged training."""
    from mpnn.checkpoint import CheckpointError  # imports TensorFlow
    from mpnn.divergence import TrainingDiverged

    return (
        InputError, ManifestError, CheckpointError, verify.ShardError, WriteError, RunLockedError, TrainingDiverged,
    )


_WHOLE_AT_LEAST_1 = (lambda v: v >= 1, "a whole number >= 1")
_WHOLE_AT_LEAST_0 = (lambda v: v >= 0, "a whole number >= 0")
# Flags (by their `TrainConfig` / argparse destination) and the values they allow.
TRAIN_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": _WHOLE_AT_LEAST_1,
    "batch_size": _WHOLE_AT_LEAST_1,
    "learning_rate": (lambda v: v > 0, "a number > 0"),
    "warmup_epochs": _WHOLE_AT_LEAST_0,
    "min_lr_fraction": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "early_stopping_patience": _WHOLE_AT_LEAST_0,
    "max_train_seconds": (lambda v: v >= 0, "a number >= 0 (0: no limit)"),
    "intra_op_threads": _WHOLE_AT_LEAST_0,
    "inter_op_threads": _WHOLE_AT_LEAST_0,
    "data_threads": _WHOLE_AT_LEAST_0,
    "parallel_calls": (lambda v: v == -1 or v >= 1, "-1 (AUTOTUNE) or a whole number >= 1"),
    "parallel_reads": (lambda v: v == -1 or v >= 1, "-1 (AUTOTUNE) or a whole number >= 1"),
    "shuffle_buffer": _WHOLE_AT_LEAST_1,
    "verbose": (lambda v: v in (0, 1, 2), "0, 1 or 2"),
    "width": _WHOLE_AT_LEAST_1,
    "message_steps": _WHOLE_AT_LEAST_1,
    "layers": _WHOLE_AT_LEAST_1,
    "dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "readout_hidden": _WHOLE_AT_LEAST_0,
    "rbf_bins": _WHOLE_AT_LEAST_1,
    "force_weight": (lambda v: v >= 0, "a number >= 0 (0: energies only)"),
    "ema_momentum": (lambda v: 0 <= v < 1, "a number in [0, 1) (0: off)"),
}
PREDICT_RANGES = {"batch_size": _WHOLE_AT_LEAST_1}
DESIGN_RANGES = {
    name: _WHOLE_AT_LEAST_1 for name in ("target_waters", "branching", "beam", "top", "max_steps", "new_water_bonds")
}
# The converters' flags (``mpnn-prep-water``, ``mpnn-prep-pdbbind``).
PREP_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "shards": _WHOLE_AT_LEAST_1,
    "workers": _WHOLE_AT_LEAST_1,
    "test_every": (lambda v: v >= 2, "a whole number >= 2 (structures 0, K, 2K, ... are test)"),
}
FRACTION_SUM_TOLERANCE = 1e-6


def flag(name: str) -> str:
    """The command-line spelling of setting `name` (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def check_ranges(values: dict[str, Any], ranges: dict[str, tuple[Callable[[Any], bool], str]] = TRAIN_RANGES) -> None:
    """Raise `UsageError` for the first of `values` (settings by name) outside its range.

    Settings missing from `values`, or None (a model default), are not checked.
    """
    for name, (allowed, description) in ranges.items():
        value = values.get(name)
        if value is not None and not allowed(value):
            raise UsageError(f"argument {flag(name)}: must be {description}, got {value}")


def check_fractions(fractions: Sequence[float], test_every: int | None = None) -> None:
    """``--fractions TRAIN VALID TEST``: three numbers >= 0 that sum to 1 (within
    `FRACTION_SUM_TOLERANCE`). Not renormalised: ``0.5 0.5 0.5`` is more likely a typo
    than a wish for thirds, so it is an error rather than a silent change. With
    ``--test-every`` the rest is split by TRAIN : VALID, so they must not both be 0."""
    values = " ".join(f"{f:g}" for f in fractions)
    if len(fractions) != 3 or any(not f >= 0 for f in fractions) or abs(sum(fractions) - 1) > FRACTION_SUM_TOLERANCE:
        raise UsageError(
            f"argument --fractions: must be three numbers >= 0 (TRAIN VALID TEST) that sum to 1, got {values}"
        )
    if test_every is not None and fractions[0] + fractions[1] <= 0:
        raise UsageError(
            f"argument --fractions: TRAIN and VALID must not both be 0 with --test-every (the rest of the "
            f"structures is split by them), got {values}"
        )


def check_input_path(path: str, flag_name: str, what: str) -> None:
    """`path` exists; `InputError` naming it and `flag_name` (what it should be) otherwise."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory ({flag_name} takes {what})")


def check_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, ranges: dict[str, tuple[Callable[[Any], bool], str]]
) -> None:
    """`check_ranges` of the parsed `args`, a value out of range ending the command as
    argparse does (``parser.error``: usage, one line naming the flag, exit 2)."""
    try:
        check_ranges(vars(args), ranges)
    except UsageError as exc:
        parser.error(str(exc))


def check_batch_split(batch_size: int, strategy: str, ranks: int) -> None:
    """``--batch-strategy gbs`` splits ``--batch-size`` across the ranks: it must divide."""
    if strategy == "gbs" and batch_size % ranks:
        multiples = ", ".join(str(ranks * k) for k in range(1, 4))
        raise UsageError(
            f"argument --batch-size: with --batch-strategy gbs on {ranks} ranks it must be a multiple of "
            f"{ranks} ({multiples}, ...), got {batch_size}"
        )


def check_elastic(elastic: bool, run_dir: str) -> None:
    """``--elastic`` needs ``--run-dir``: a worker that joins later must find the same run
    directory without asking the others (see `mpnn.elastic`)."""
    if elastic and not run_dir:
        raise UsageError("argument --run-dir: required with --elastic (workers that join later must use the same one)")


def check_data_path(path: str) -> None:
    """`path` is a ``manifest.json`` or a directory holding one; `InputError` otherwise."""
    if not path:
        raise UsageError("argument --data: required (a prepared data set: its directory or manifest.json)")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory (--data takes a prepared data set)")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, verify.MANIFEST_NAME)):
        raise InputError(
            f"{path}: no {verify.MANIFEST_NAME}, not a prepared data set (make one with mpnn-prep-water "
            "or mpnn-prep-pdbbind)"
        )


def check_choice(option: str, value: str, allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        raise UsageError(f"argument {option}: invalid choice {value!r} (choose from {', '.join(allowed)})")


def load_model_file(path: str) -> tf.keras.Model:
    """`mpnn.models.load_model`, with a missing or unreadable file as `InputError`."""
    import tensorflow as tf

    from mpnn.models import load_model

    if not os.path.isfile(path):
        raise InputError(f"{path}: no such model file (--model takes the model.keras of a run directory)")
    try:
        return load_model(path)
    # What a damaged or foreign file raises while Keras unzips and rebuilds it.
    except (OSError, ValueError, KeyError, TypeError, EOFError, tf.errors.OpError) as exc:
        saved, running = saved_keras_version(path), keras_version()
        if saved is not None and _minor(saved) > _minor(running):
            raise InputError(
                f"{path}: saved by Keras {saved}, this environment has Keras {running}: a model.keras of the "
                "current stack (TensorFlow 2.21, tf-keras) loads there only; use that stack's .venv-current "
                "(scripts/setup.sh, MPNN_STACK=current)"
            ) from exc
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable saved model ({reason[:200]})") from exc


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def saved_keras_version(path: str) -> str | None:
    """The Keras version a ``.keras`` file records (its ``metadata.json``), None if unreadable."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return str(json.loads(archive.read("metadata.json"))["keras_version"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def keras_version() -> str:
    """The version of the Keras that ``tf.keras`` is (tf-keras or the keras package)."""
    from mpnn.host import keras_version as described

    return described().split()[-1]


def run(prog: str, work: Callable[[], int], data: str | None = None) -> int:
    """Run `work` (a CLI's body) and turn user errors into one line on stderr and an exit
    status; a TensorFlow error while reading data becomes the problems `mpnn-verify` finds
    in `data` (a data set path), or keeps its traceback if it finds none."""
    try:
        return work()
    except UsageError as exc:
        return _fail(prog, exc, 2)
    except user_errors() as exc:
        return _fail(prog, exc, 1)
    except tf_op_error():
        found = verify.problems(data) if data else []
        if not found:
            raise
        return _fail(prog, "damaged data set: " + "; ".join(found), 1)


def tf_op_error() -> type[Exception]:
    """TensorFlow's error of a failed op (imports TensorFlow)."""
    import tensorflow as tf

    return tf.errors.OpError


def _fail(prog: str, message: object, status: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status
