"""The distributed engines: one small interface (`Engine`), two implementations.

- ``horovod`` (`mpnn.engines.horovod`): Horovod 0.28.1 on TensorFlow 2.15, launched by
  ``horovodrun``, ``mpirun`` or ``srun --mpi=pmix``; the only engine with elastic training.
- ``tf-distribute`` (`mpnn.engines.tf_distribute`): TensorFlow's
  `tf.distribute.MultiWorkerMirroredStrategy` (collective all-reduce), on any TensorFlow
  (the current stack, TensorFlow 2.21 + tf-keras, has no Horovod); launched by
  ``mpnn-launch`` (`mpnn.launch`), which gives each worker its ``TF_CONFIG``.

`resolve` turns ``--engine`` (``horovod``, ``tf-distribute`` or ``auto``) into an engine
name without importing either engine (so the command-line checks stay fast and a stack
without Horovod never imports it); `create` builds the engine. `mpnn.distributed` holds
the one engine of the process and is what the rest of the package calls.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import os
from typing import Any, Callable, ContextManager

from mpnn.errors import UsageError

HOROVOD = "horovod"
TF_DISTRIBUTE = "tf-distribute"
AUTO = "auto"
NAMES = (HOROVOD, TF_DISTRIBUTE)


def horovod_installed() -> bool:
    """Whether Horovod's TensorFlow binding can be imported here (it is not imported)."""
    return importlib.util.find_spec("horovod") is not None and importlib.util.find_spec("horovod.tensorflow") is not None


def resolve(name: str, environ: dict[str, str] | None = None) -> str:
    """The engine `name` (``--engine``) stands for in this environment.

    ``auto``: ``tf-distribute`` when the process was launched for it (``TF_CONFIG`` set,
    as `mpnn.launch` does), else ``horovod`` when Horovod is installed, else
    ``tf-distribute`` (the current stack).

    Raises:
        UsageError: an unknown name, or ``horovod`` where Horovod is not installed.
    """
    environ = os.environ if environ is None else environ
    if name == AUTO:
        if environ.get("TF_CONFIG") or not horovod_installed():
            return TF_DISTRIBUTE
        return HOROVOD
    if name not in NAMES:
        raise UsageError(f"argument --engine: invalid choice {name!r} (choose from horovod, tf-distribute, auto)")
    if name == HOROVOD and not horovod_installed():
        raise UsageError(
            "argument --engine: horovod is not installed in this environment (the current stack, "
            "MPNN_STACK=current, has none): use --engine tf-distribute, or the .venv of MPNN_STACK=horovod"
        )
    return name


def check_elastic(engine: str, elastic: bool) -> None:
    """``--elastic`` is Horovod's (its elastic driver re-forms the ring when workers come
    and go); `tf.distribute` cannot change its worker set while it runs."""
    if elastic and engine != HOROVOD:
        raise UsageError(f"argument --elastic: elastic training needs --engine horovod, not {engine}")


class Engine(abc.ABC):
    """What training asks of a data-parallel engine: start-up, who am I, how gradients and
    small objects travel between the ranks, and the Keras callbacks the engine needs.

    Every rank calls every collective method in the same order (as with Horovod's named
    collectives); `name` arguments label the operation (Horovod uses them, tf.distribute
    ignores them).
    """

    name: str = ""
    supports_elastic: bool = False
    # Whether Keras' weight saving must run on every rank (it reads variables collectively).
    saves_on_every_rank: bool = False

    @abc.abstractmethod
    def start(self) -> None:
        """Join the other ranks' group, without starting TensorFlow's runtime (so that
        `mpnn.distributed.init` can still set its threads and visible GPU)."""

    def connect(self) -> None:
        """Called once the runtime's threads and devices are set: engines that start
        TensorFlow's runtime themselves (tf.distribute's collective group) do it here."""

    @abc.abstractmethod
    def rank(self) -> int: ...

    @abc.abstractmethod
    def size(self) -> int: ...

    @abc.abstractmethod
    def local_rank(self) -> int:
        """This rank's index among the ranks of its node."""

    @abc.abstractmethod
    def local_size(self) -> int:
        """Ranks on this rank's node."""

    def scope(self) -> ContextManager[Any]:
        """The context in which models and optimizers are built (their variables then live
        where the engine needs them)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def distributed_optimizer(self, optimizer: Any) -> Any:
        """`optimizer` whose ``apply_gradients`` (and so ``minimize``) applies the gradients
        averaged over the ranks, whichever way a ``train_step`` reaches it."""

    def distribute(self, dataset: Any) -> Any:
        """This rank's `dataset` (its own share, already sharded by the loader) as ``fit``
        takes it: unchanged, never re-sharded or re-batched by the engine."""
        return dataset

    def run_step(self, step: Callable[..., Any], *args: Any) -> Any:
        """Call a training step (e.g. ``model.train_step``) as the engine runs it: directly,
        or once per local replica; returns its (local) result."""
        return step(*args)

    def local(self, value: Any) -> Any:
        """This rank's part of a value `distribute`'s data or `run_step` gave (the value itself
        when the engine does not wrap it)."""
        return value

    @abc.abstractmethod
    def allgather_object(self, value: Any, name: str) -> list[Any]:
        """Every rank's picklable `value`, in rank order, on every rank."""

    def broadcast_object(self, value: Any, name: str) -> Any:
        """Rank 0's picklable `value` on every rank."""
        return self.allgather_object(value, name)[0]

    @abc.abstractmethod
    def any_rank(self, flag: bool, name: str) -> bool:
        """Whether `flag` is True on any rank (one small collective: every rank calls it)."""

    @abc.abstractmethod
    def broadcast_variables(self, variables: list[Any]) -> None:
        """Overwrite `variables` on every rank with rank 0's values."""

    @abc.abstractmethod
    def average_variables(self, variables: list[Any]) -> None:
        """Replace each floating-point variable by its mean over the ranks."""

    @abc.abstractmethod
    def sync_callbacks(self) -> list[Any]:
        """Keras callbacks that keep the ranks in step: the initial broadcast of rank 0's
        weights and the averaging of the logged metrics, where the engine does not do it."""

    @abc.abstractmethod
    def warmup_callback(self, initial_lr: float, warmup_epochs: int, steps_per_epoch: int) -> Any:
        """Linear warm-up from ``initial_lr / size`` to `initial_lr` over `warmup_epochs`,
        adjusted every batch (Goyal et al., 2017; Horovod's formula on both engines)."""

    @abc.abstractmethod
    def schedule_callback(
        self, initial_lr: float, multiplier: Callable[[float], float], start_epoch: int, steps_per_epoch: int
    ) -> Any:
        """``lr = initial_lr * multiplier(fractional epoch)`` every batch from `start_epoch`."""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """The engine's library versions, for ``host_info.json``."""


def create(name: str, timeline: str = "", autotune_log: str = "") -> Engine:
    """A new (not started) engine of `name` (``horovod`` or ``tf-distribute``); `timeline`
    and `autotune_log` are Horovod's (`mpnn.engines.horovod.HorovodEngine`)."""
    if name == HOROVOD:
        from mpnn.engines.horovod import HorovodEngine

        return HorovodEngine(timeline, autotune_log)
    if name == TF_DISTRIBUTE:
        from mpnn.engines.tf_distribute import TfDistributeEngine

        return TfDistributeEngine()
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(NAMES)})")
