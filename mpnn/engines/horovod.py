"""The Horovod engine: Horovod 0.28.1 on TensorFlow 2.15, one process per rank.

Launched by ``horovodrun -np K``, ``mpirun`` or ``srun --mpi=pmix``; one process alone is
one rank. The shape of Horovod's Keras example: `hvd.init`, a `hvd.DistributedOptimizer`
(one fused allreduce per step), `BroadcastGlobalVariablesCallback(0)`,
`MetricAverageCallback`, Horovod's warm-up and schedule callbacks.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import horovod
import horovod.tensorflow as hvd_tf
import horovod.tensorflow.keras as hvd
import tensorflow as tf

from mpnn.engines import HOROVOD, Engine

log = logging.getLogger(__name__)


class HorovodEngine(Engine):
    """`Engine` on Horovod.

    Args:
        timeline: write Horovod's timeline (Chrome trace JSON of every collective) to this
            file (``HOROVOD_TIMELINE``; rank 0 writes it).
        autotune_log: switch on Horovod's autotuning of its fusion buffer and cycle time
            (``HOROVOD_AUTOTUNE``) and log the trials to this CSV file (rank 0).
    """

    name = HOROVOD
    supports_elastic = True

    def __init__(self, timeline: str = "", autotune_log: str = ""):
        self.timeline = timeline
        self.autotune_log = autotune_log

    def start(self) -> None:
        # Horovod reads these when it starts, so they are set before `hvd.init`.
        if self.timeline:
            # Horovod opens the file when it starts, and writes no timeline if it cannot.
            os.makedirs(os.path.dirname(os.path.abspath(self.timeline)), exist_ok=True)
            os.environ["HOROVOD_TIMELINE"] = os.path.abspath(self.timeline)
        if self.autotune_log:
            os.environ["HOROVOD_AUTOTUNE"] = "1"
            os.environ["HOROVOD_AUTOTUNE_LOG"] = os.path.abspath(self.autotune_log)
        if (self.timeline or self.autotune_log) and hvd_tf.is_initialized():
            log.warning("Horovod has started already: the timeline and autotuning settings take no effect")
        hvd.init()

    def rank(self) -> int:
        return hvd.rank()

    def size(self) -> int:
        return hvd.size()

    def local_rank(self) -> int:
        return hvd.local_rank()

    def local_size(self) -> int:
        return hvd.local_size()

    def distributed_optimizer(self, optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
        """`optimizer` with its gradients averaged over the ranks by one fused allreduce per step.

        ``groups=1``: all gradients of a step go to Horovod as one group, negotiated and
        reduced together, instead of one request per variable; ``sparse_as_dense``:
        embedding gradients (`tf.IndexedSlices`) are reduced as small dense tensors instead
        of being allgathered. Our models are small (3e4 to 1e5 parameters), so per-request
        latency, not bandwidth, is the cost: on 2 CPU ranks of 2 cores these two settings
        brought the CPU per step back to the 1-rank figure and the weak-scaling efficiency at
        256 graphs per rank from 79-90% to 96% (RESULTS.md, "Weak scaling on 2 ranks").

        Horovod 0.28.1 allreduces in ``compute_gradients`` only, so a ``train_step`` that
        calls ``apply_gradients`` with its own tape's gradients would step each rank on its
        own gradients. The class returned here is Horovod's with the allreduce moved into
        ``apply_gradients``, which both ``minimize`` and a direct call go through: Keras'
        own ``train_step`` runs the same operations in the same order as before (same
        results, bit for bit).
        """
        horovod_class = type(hvd.DistributedOptimizer(optimizer, groups=1, sparse_as_dense=True))
        methods = dict(horovod_class.__dict__)
        plain = type(optimizer)
        horovod_apply = methods["apply_gradients"]

        def compute_gradients(self, loss, var_list, tape=None):
            # This rank's gradients; `apply_gradients` averages them.
            return plain.compute_gradients(self, loss, var_list, tape=tape)

        def apply_gradients(self, grads_and_vars, *args, **kwargs):
            grads, variables = zip(*list(grads_and_vars))
            return horovod_apply(self, zip(self._allreduce(grads, variables), variables), *args, **kwargs)

        # Horovod's own construction: its methods call `super(self.__class__, self)`, so the
        # class must derive from the optimizer's class directly (and keeps its name, so saved
        # optimizers load without Horovod).
        methods.update(compute_gradients=compute_gradients, apply_gradients=apply_gradients)
        methods.pop("_compute_gradients", None)
        cls = type(plain.__name__, (plain,), methods)
        return cls.from_config(optimizer.get_config())

    def allgather_object(self, value: Any, name: str) -> list[Any]:
        return hvd_tf.allgather_object(value, name=name)

    def broadcast_object(self, value: Any, name: str) -> Any:
        return hvd_tf.broadcast_object(value, root_rank=0, name=name)

    def any_rank(self, flag: bool, name: str) -> bool:
        return bool(hvd_tf.allreduce(tf.constant(int(flag)), op=hvd_tf.Sum, name=name).numpy() > 0)

    def broadcast_variables(self, variables: list[tf.Variable]) -> None:
        hvd_tf.broadcast_variables(variables, root_rank=0)

    def average_variables(self, variables: list[tf.Variable]) -> None:
        for variable in variables:
            if variable.dtype.is_floating:
                name = "average_" + variable.name.replace(":", "_").replace("/", "_")
                variable.assign(hvd_tf.allreduce(variable, op=hvd_tf.Average, name=name))

    def sync_callbacks(self) -> list[tf.keras.callbacks.Callback]:
        return [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback()]

    def warmup_callback(self, initial_lr: float, warmup_epochs: int, steps_per_epoch: int) -> tf.keras.callbacks.Callback:
        return hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=initial_lr, warmup_epochs=warmup_epochs, steps_per_epoch=steps_per_epoch
        )

    def schedule_callback(
        self, initial_lr: float, multiplier: Callable[[float], float], start_epoch: int, steps_per_epoch: int
    ) -> tf.keras.callbacks.Callback:
        return hvd.callbacks.LearningRateScheduleCallback(
            initial_lr=initial_lr, multiplier=multiplier, start_epoch=start_epoch, staircase=False,
            steps_per_epoch=steps_per_epoch,
        )

    def versions(self) -> dict[str, str]:
        return {"horovod": horovod.__version__}
