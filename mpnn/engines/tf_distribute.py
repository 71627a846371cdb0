"""The tf.distribute engine: `tf.distribute.MultiWorkerMirroredStrategy`, one worker
process per rank, gradients summed by TensorFlow's collective all-reduce (ring on CPU).

The workers find each other through ``TF_CONFIG``, which `mpnn.launch` writes (``mpnn-launch
-np K`` on one machine, ``mpnn-launch --slurm`` under ``srun``, ``--pbs`` under
``mpiexec``; `mpnn.cluster_env`). Without ``TF_CONFIG`` the process is one rank alone and
trains under TensorFlow's default strategy, as a Horovod rank alone does.

How it keeps the Horovod engine's contract:

- Models and optimizers are built in `scope` (mirrored variables); the initial values are
  rank 0's (the strategy broadcasts them when it creates each variable).
- Each worker trains on its own share of the records, as the loader cut it: the dataset
  goes to ``fit`` through `distribute_datasets_from_function`, which neither shards
  (auto-sharding is also switched off in the dataset's options) nor re-batches it, so a
  worker's batch is its ``--batch-size`` graphs (``dbs``) as with Horovod.
- Gradients: the optimizer's ``apply_gradients`` makes them dense and sums them over the
  workers (Keras' own aggregation under a strategy) and Keras' compiled loss is divided by the worker count,
  so the step uses the mean gradient, as Horovod's average does. A custom ``train_step``
  gets the same by computing its loss with ``self.compute_loss`` (or dividing its own by
  ``tf.distribute.get_strategy().num_replicas_in_sync``) and calling ``minimize`` or
  ``apply_gradients``.
- Logged metrics: each worker's own during the epoch (our trainer reads them without Keras'
  per-step all-reduce of every metric variable), averaged over the workers at the epoch's
  end (`MetricAverage`), as Horovod does; warm-up and cosine schedule are
  `mpnn.callbacks`' copies of Horovod's formulas.
- Small objects (the resumed state, predictions, peak memory) travel pickled through the
  strategy's all-gather.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Callable, ContextManager

import numpy as np
import tensorflow as tf

from mpnn import cluster_env
from mpnn.engines import TF_DISTRIBUTE, Engine


class TfDistributeEngine(Engine):
    """`Engine` on `tf.distribute.MultiWorkerMirroredStrategy`."""

    name = TF_DISTRIBUTE
    saves_on_every_rank = True

    def __init__(self):
        self.cluster: cluster_env.Cluster | None = None
        self.strategy: tf.distribute.Strategy | None = None

    def start(self) -> None:
        self.cluster = cluster_env.cluster_from_tf_config(os.environ.get("TF_CONFIG", ""))
        if self.cluster is None:
            cluster_env.check_alone(os.environ)
            self.cluster = cluster_env.Cluster(workers=("localhost:0",), index=0)

    def connect(self) -> None:
        if self.cluster.size == 1:
            # One rank alone trains as without any strategy (no collective runtime to start).
            self.strategy = tf.distribute.get_strategy()
            return
        implementation = tf.distribute.experimental.CommunicationImplementation
        gpus = tf.config.list_physical_devices("GPU")
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=implementation.NCCL if gpus else implementation.RING
        )
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)

    def rank(self) -> int:
        return self.cluster.index

    def size(self) -> int:
        return self.cluster.size

    def local_rank(self) -> int:
        return self.cluster.local_rank

    def local_size(self) -> int:
        return self.cluster.local_size

    def scope(self) -> ContextManager[Any]:
        return self.strategy.scope()

    def distributed_optimizer(self, optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
        """`optimizer` whose ``apply_gradients`` makes embedding gradients (`tf.IndexedSlices`)
        dense before Keras all-reduces them under the strategy (as Horovod's
        ``sparse_as_dense``): sparse ones cost an all-gather of indices and values each, two
        collectives per embedding per step, and step Adam's moments of the rows in the batch
        only, unlike the Horovod engine. Keeps the optimizer's class name."""
        plain = type(optimizer)

        def apply_gradients(self, grads_and_vars, *args, **kwargs):
            dense = [(tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g, v) for g, v in grads_and_vars]
            return plain.apply_gradients(self, dense, *args, **kwargs)

        cls = type(plain.__name__, (plain,), {"apply_gradients": apply_gradients})
        return cls.from_config(optimizer.get_config())

    def distribute(self, dataset: tf.data.Dataset) -> Any:
        if self.size() == 1:
            return dataset
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = dataset.with_options(options)
        return self.strategy.distribute_datasets_from_function(lambda _: dataset)

    def run_step(self, step: Callable[..., Any], *args: Any) -> Any:
        if self.size() == 1:
            return step(*args)
        return self.local(self.strategy.run(step, args=args))

    def local(self, value: Any) -> Any:
        if self.size() == 1:
            return value
        return self.strategy.experimental_local_results(value)[0]

    def _all_gather(self, tensor: tf.Tensor) -> np.ndarray:
        """`tensor` of every worker concatenated along axis 0 (equal shapes)."""

        def gather() -> tf.Tensor:
            return tf.distribute.get_replica_context().all_gather(tensor, axis=0)

        return self.local(self.strategy.run(gather)).numpy()

    def any_rank(self, flag: bool, name: str) -> bool:
        if self.size() == 1:
            return flag
        return bool(self._all_gather(tf.constant([int(flag)], tf.int64)).max() > 0)

    def allgather_object(self, value: Any, name: str) -> list[Any]:
        if self.size() == 1:
            return [value]
        payload = pickle.dumps(value)
        # Collectives carry numbers, not bytes: the pickle padded into int64 words.
        lengths = self._all_gather(tf.constant([len(payload)], tf.int64))
        words = -(-int(lengths.max()) // 8)
        padded = np.zeros(words * 8, np.uint8)
        padded[: len(payload)] = np.frombuffer(payload, np.uint8)
        gathered = self._all_gather(tf.constant(padded.view(np.int64)[None, :]))
        return [pickle.loads(row.view(np.uint8)[:length].tobytes()) for row, length in zip(gathered, lengths)]

    def broadcast_variables(self, variables: list[tf.Variable]) -> None:
        if self.size() == 1:
            return
        values = self.broadcast_object([variable.numpy() for variable in variables], "broadcast_variables")
        for variable, value in zip(variables, values):
            variable.assign(value)

    def average_variables(self, variables: list[tf.Variable]) -> None:
        floating = [variable for variable in variables if variable.dtype.is_floating]
        if self.size() == 1 or not floating:
            return
        gathered = self.allgather_object([variable.numpy() for variable in floating], "average_variables")
        for index, variable in enumerate(floating):
            variable.assign(np.mean([values[index] for values in gathered], axis=0))

    def sync_callbacks(self) -> list[tf.keras.callbacks.Callback]:
        # Initial weights: broadcast when the strategy creates them.
        return [MetricAverage(self.allgather_object)] if self.size() > 1 else []

    def warmup_callback(self, initial_lr: float, warmup_epochs: int, steps_per_epoch: int) -> tf.keras.callbacks.Callback:
        return LearningRateSchedule(
            initial_lr, warmup_multiplier(warmup_epochs, steps_per_epoch, self.size()), start_epoch=0,
            end_epoch=warmup_epochs, steps_per_epoch=steps_per_epoch,
        )

    def schedule_callback(
        self, initial_lr: float, multiplier: Callable[[float], float], start_epoch: int, steps_per_epoch: int
    ) -> tf.keras.callbacks.Callback:
        return LearningRateSchedule(initial_lr, multiplier, start_epoch=start_epoch, steps_per_epoch=steps_per_epoch)

    def versions(self) -> dict[str, str]:
        return {}  # TensorFlow's own (host_info records TensorFlow and Keras for every engine)


# Horovod's callbacks, for the engine without Horovod (same formulas, same moments).


class MetricAverage(tf.keras.callbacks.Callback):
    """At each epoch end, replace every number in the epoch's logs (training and validation
    metrics) by its mean over the ranks: Horovod's `MetricAverageCallback`, for the
    tf.distribute engine, whose trainer reports each worker's own metrics
    (`mpnn.batch_cut.CutBatchTrainer.get_metrics_result`). Every rank must run it first
    among the callbacks that read the logs.

    Args:
        allgather: ``allgather(value, name)`` -> every rank's value (the engine's
            `Engine.allgather_object`).
    """

    def __init__(self, allgather: Callable[[Any, str], list[Any]]):
        super().__init__()
        self.allgather = allgather

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        names = sorted(logs)
        gathered = self.allgather([float(logs[name]) for name in names], f"metrics_{epoch}")
        for index, name in enumerate(names):
            logs[name] = sum(values[index] for values in gathered) / len(gathered)


def warmup_multiplier(warmup_epochs: int, steps_per_epoch: int, ranks: int) -> Callable[[float], float]:
    """Horovod's warm-up (`hvd.callbacks.LearningRateWarmupCallback`): the multiplier at
    fractional epoch `e` grows linearly from ``1 / ranks`` to 1 over `warmup_epochs`, the
    epoch shifted by one step so that it reaches round values at the epochs' ends."""

    def multiplier(epoch: float) -> float:
        epoch += 1.0 / steps_per_epoch
        return 1.0 / ranks * (epoch * (ranks - 1) / warmup_epochs + 1)

    return multiplier


class LearningRateSchedule(tf.keras.callbacks.Callback):
    """Set ``lr = initial_lr * multiplier(epoch + batch / steps_per_epoch)`` before every
    batch of the epochs in [`start_epoch`, `end_epoch`): Horovod's
    `LearningRateScheduleCallback` with ``staircase=False`` (same formula, same moments),
    for engines without Horovod. Horovod's momentum correction is left out: it applies to
    optimizers with a ``momentum`` attribute, and ours (Adam, AdamW) have none.

    Args:
        initial_lr: the learning rate the multiplier scales (the scaled rate of the run).
        multiplier: fractional epoch -> factor (`warmup_multiplier`, `cosine_multiplier`).
        start_epoch, end_epoch: the epochs adjusted (end None: to the last).
        steps_per_epoch: training steps of one epoch.
    """

    def __init__(self, initial_lr: float, multiplier: Callable[[float], float], start_epoch: int = 0,
                 end_epoch: int | None = None, steps_per_epoch: int = 1):
        super().__init__()
        self.initial_lr = initial_lr
        self.multiplier = multiplier
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.steps_per_epoch = steps_per_epoch
        self.current_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.current_epoch < self.start_epoch or (self.end_epoch is not None and self.current_epoch >= self.end_epoch):
            return
        epoch = self.current_epoch + float(batch) / self.steps_per_epoch
        tf.keras.backend.set_value(self.model.optimizer.learning_rate, self.initial_lr * self.multiplier(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = tf.keras.backend.get_value(self.model.optimizer.learning_rate)
