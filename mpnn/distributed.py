"""The distributed layer: the engine of this process, device and thread placement, batch
and learning-rate policy.

Works the same single-process (``mpnn-train``: one rank) and with K ranks on
either engine (`mpnn.engines`): Horovod (``horovodrun -np K``, ``mpirun``, ``srun``) or
tf.distribute (``mpnn-launch -np K``, ``srun mpnn-launch --slurm``). The rest of the package
calls the functions here, never an engine's library.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import tensorflow as tf

from mpnn import engines, host
from mpnn.errors import UsageError

log = logging.getLogger(__name__)

# The engine of this process, once `init` has started it.
_engine: engines.Engine | None = None


@dataclass(frozen=True)
class ThreadPlan:
    """How one rank runs TensorFlow on its CPU cores (see `thread_plan`).

    Attributes:
        intra_op_threads: threads of one op (0: TensorFlow's default, every core).
        inter_op_threads: ops run at the same time (0: TensorFlow's default).
        batch_cut: groups of whole graphs each training batch is cut into, for the
            inter-op threads to run at once (`mpnn.batch_cut`; 1: no cut). A setting of
            the training, never of the saved model.
    """

    intra_op_threads: int
    inter_op_threads: int
    batch_cut: int


def thread_plan(
    cores_per_rank: int,
    local_ranks: int,
    gpu: bool,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    batch_cut: int = 0,
) -> ThreadPlan:
    """The thread settings of one rank; `intra_op_threads`, `inter_op_threads` and
    `batch_cut`, when given (non-zero), win.

    - With a GPU the GPU does the work: a rank alone on its node keeps TensorFlow's
      defaults, ranks sharing a node share its cores (``cores_per_rank`` threads per op, one
      op at a time); batches are not cut.
    - On CPU with one core per rank (the CPU job scripts: one rank per core): one thread,
      one op at a time, batches not cut.
    - On CPU with two or more cores per rank: batches are cut in two halves of whole graphs
      that two inter-op threads run at once, each op on half of the cores. The update MLPs
      of a message-passing model are many small ops that one op's threads share poorly: on
      2 cores this runs the tutorial-size MPNN (32 features, 8 steps, batch 256) 1.37x
      faster than TensorFlow's defaults, with 20% less CPU per step (RESULTS.md,
      "Training throughput").
    """
    if gpu:
        shared = cores_per_rank if local_ranks > 1 else 0
        return ThreadPlan(intra_op_threads or shared, inter_op_threads or (1 if local_ranks > 1 else 0), batch_cut or 1)
    if cores_per_rank < 2:
        return ThreadPlan(intra_op_threads or 1, inter_op_threads or 1, batch_cut or 1)
    inter = inter_op_threads or 2
    return ThreadPlan(intra_op_threads or max(1, cores_per_rank // 2), inter, batch_cut or (2 if inter > 1 else 1))


def init(
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    batch_cut: int = 0,
    timeline: str = "",
    autotune_log: str = "",
    engine: str = engines.AUTO,
) -> ThreadPlan:
    """Start the engine (`mpnn.engines.resolve` of `engine`), pin one GPU per local rank,
    and set this rank's threads (`thread_plan`).

    Must run before TensorFlow creates its runtime (before the first op), else the threads
    stay as they were (with a warning). Returns the plan, whose ``batch_cut`` the training
    takes (`mpnn.batch_cut.cut_batch_trainer`). A second call keeps the engine started first
    (and raises `mpnn.errors.UsageError` if it asks for another one).

    Args:
        timeline: write Horovod's timeline (Chrome trace JSON of every collective) to this
            file (``HOROVOD_TIMELINE``; rank 0 writes it). Horovod only.
        autotune_log: switch on Horovod's autotuning of its fusion buffer and cycle time
            (``HOROVOD_AUTOTUNE``) and log the trials to this CSV file (rank 0). Horovod only.
        engine: ``horovod``, ``tf-distribute`` or ``auto``.
    """
    global _engine
    name = engines.resolve(engine)
    if _engine is not None:
        if _engine.name != name:
            raise UsageError(f"argument --engine: {_engine.name} has started in this process already, not {name}")
        return _plan(intra_op_threads, inter_op_threads, batch_cut)
    if name != engines.HOROVOD and (timeline or autotune_log):
        log.warning("--horovod-timeline and --autotune are Horovod's: ignored on the %s engine", name)
    started = engines.create(name, timeline=timeline, autotune_log=autotune_log)
    started.start()
    _engine = started
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        # One GPU per local rank; memory growth so that TF does not grab all of it.
        gpu = gpus[started.local_rank() % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
    plan = _plan(intra_op_threads, inter_op_threads, batch_cut)
    try:
        if plan.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(plan.intra_op_threads)
        if plan.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(plan.inter_op_threads)
    except RuntimeError as exc:
        # TensorFlow has already run an op (e.g. earlier in a notebook), and set other threads
        # then: they stay, which costs speed only.
        log.warning("TensorFlow has started, its threads stay as they are (wanted %s): %s", plan, exc)
    started.connect()
    return plan


def _plan(intra_op_threads: int, inter_op_threads: int, batch_cut: int) -> ThreadPlan:
    gpu = bool(tf.config.list_physical_devices("GPU"))
    return thread_plan(cores_per_rank(), local_size(), gpu, intra_op_threads, inter_op_threads, batch_cut)


def engine() -> engines.Engine:
    """The engine of this process (`init` starts it)."""
    if _engine is None:
        raise RuntimeError("mpnn.distributed.init() has not run in this process")
    return _engine


def engine_name() -> str:
    return engine().name


def distributed_optimizer(optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
    """`optimizer` applying the gradients averaged over the ranks (`mpnn.engines.Engine.distributed_optimizer`)."""
    return engine().distributed_optimizer(optimizer)


def scope() -> ContextManager[Any]:
    """Build models and optimizers in this context (`mpnn.engines.Engine.scope`)."""
    return engine().scope()


def distribute(dataset: tf.data.Dataset) -> Any:
    """This rank's dataset as ``fit`` takes it (`mpnn.engines.Engine.distribute`)."""
    return engine().distribute(dataset)


def run_step(step: Callable[..., Any], *args: Any) -> Any:
    """Run a training step the engine's way (`mpnn.engines.Engine.run_step`)."""
    return engine().run_step(step, *args)


def local(value: Any) -> Any:
    """This rank's part of a distributed value (`mpnn.engines.Engine.local`)."""
    return engine().local(value)


def cores_per_rank() -> int:
    """This rank's share of the cores when the ranks of its node share them evenly (``cores
    / local ranks``, at least 1; cores: `mpnn.host.usable_cores`)."""
    return max(1, host.usable_cores() // local_size())


def shared_node_threads() -> int:
    """Threads per rank when the ranks of a node share its cores evenly (`cores_per_rank`),
    or 0 (TensorFlow's default: every core) for a rank alone on its node."""
    return 0 if local_size() == 1 else cores_per_rank()


def rank() -> int:
    return engine().rank()


def size() -> int:
    return engine().size()


def local_size() -> int:
    """Ranks on this rank's node."""
    return engine().local_size()


def is_root() -> bool:
    """True on the rank that writes files and shows progress (rank 0)."""
    return rank() == 0


def broadcast_object(value: Any, name: str) -> Any:
    """Rank 0's `value` on every rank (any picklable object)."""
    return engine().broadcast_object(value, name)


def any_rank(flag: bool, name: str) -> bool:
    """Whether `flag` is True on any rank (a one-number allreduce: every rank must call it)."""
    return engine().any_rank(flag, name)


def allgather_object(value: Any, name: str) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    return engine().allgather_object(value, name)


def rank0_value(value: Any, name: str, elastic: bool) -> Any:
    """Rank 0's `value` on every rank (a broadcast), or under elastic training this rank's
    own `value` (no collectives outside `fit` there: see `mpnn.engines.horovod_elastic`)."""
    return value if elastic else broadcast_object(value, name)


def broadcast_variables(variables: list[tf.Variable]) -> None:
    """Overwrite `variables` on every rank with rank 0's values."""
    engine().broadcast_variables(variables)


def average_variables(variables: list[tf.Variable]) -> None:
    """Replace each floating-point variable by its mean over the ranks (allreduce).

    For state that the optimizer does not synchronise, such as batch normalisation's
    moving statistics, which each rank estimates from its own batches.
    """
    engine().average_variables(variables)


def per_rank_batch_size(batch_size: int, strategy: str, ranks: int) -> int:
    """Graphs per batch on each rank.

    ``dbs`` (constant device batch size): every rank takes `batch_size` graphs, so the
    global batch grows with the rank count. ``gbs`` (constant global batch size): the
    `batch_size` graphs of a step are split evenly across the ranks.
    """
    if strategy == "dbs":
        return batch_size
    if strategy == "gbs":
        if batch_size % ranks:
            raise ValueError(
                f"--batch-strategy gbs: --batch-size {batch_size} is not divisible by {ranks} ranks"
            )
        return batch_size // ranks
    raise ValueError(f"unknown batch strategy {strategy!r} (dbs or gbs)")


def scaled_learning_rate(base_lr: float, global_batch: int, reference_batch: int, rule: str) -> float:
    """Learning rate for a global batch of `global_batch` graphs.

    `base_lr` is tuned for `reference_batch` (the batch of one rank, i.e. ``--batch-size``).
    ``linear``: multiply by ``global_batch / reference_batch`` (Goyal et al., 2017, used with
    warm-up); ``sqrt``: by its square root (Krizhevsky, 2014; gentler for adaptive
    optimisers); ``none``: keep `base_lr`. With ``gbs`` the global batch does not change,
    so every rule keeps `base_lr`.
    """
    ratio = global_batch / reference_batch
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown learning-rate scaling rule {rule!r} (linear, sqrt or none)")


def check_batch_split(batch_size: int, strategy: str, ranks: int) -> None:
    """``--batch-strategy gbs`` splits ``--batch-size`` across the ranks: it must divide."""
    if strategy == "gbs" and batch_size % ranks:
        multiples = ", ".join(str(ranks * k) for k in range(1, 4))
        raise UsageError(
            f"argument --batch-size: with --batch-strategy gbs on {ranks} ranks it must be a multiple of "
            f"{ranks} ({multiples}, ...), got {batch_size}"
        )
