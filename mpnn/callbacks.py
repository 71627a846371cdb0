"""Keras callbacks of our own; everything else comes from Keras and Horovod.

`EpochLog` adds timing and the learning rate to the epoch logs (so Keras' `CSVLogger` writes
them to ``log.csv``), `PeakMemory` the largest rank's peak memory; `TimeBudget` stops every
rank together once a time budget is spent; `AverageNonTrainableVariables` keeps batch-norm
statistics identical across ranks; `cosine_multiplier` is the decay Horovod's
`LearningRateScheduleCallback` applies after warm-up.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import tensorflow as tf

from mpnn import distributed, host


class EpochLog(tf.keras.callbacks.Callback):
    """Add ``lr``, ``epoch_seconds`` and ``graphs_per_second`` to each epoch's logs.

    Args:
        graphs_per_epoch: training graphs per epoch over all ranks.
    """

    def __init__(self, graphs_per_epoch: int):
        super().__init__()
        self.graphs_per_epoch = graphs_per_epoch
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        seconds = time.perf_counter() - self._start
        logs["lr"] = float(tf.keras.backend.get_value(self.model.optimizer.learning_rate))
        logs["epoch_seconds"] = seconds
        logs["graphs_per_second"] = self.graphs_per_epoch / seconds


class PeakMemory(tf.keras.callbacks.Callback):
    """Add ``peak_rss_mib``: the largest peak resident memory of any rank's process so far
    (MiB; `mpnn.host.peak_rss_kib` of each process, gathered over the ranks, so it never
    decreases over the epochs). Every rank must run it (it gathers); put it after Horovod's
    `MetricAverageCallback`, which would otherwise average the ranks' peaks."""

    def on_epoch_end(self, epoch, logs=None):
        peak_mib = host.peak_rss_kib() / 1024
        peaks = distributed.allgather_object(peak_mib, f"peak_rss_{epoch}")
        if logs is not None:
            logs["peak_rss_mib"] = max(peaks)


class TimeBudget(tf.keras.callbacks.Callback):
    """Stop training after the epoch in which `seconds` of training have passed, counting
    `spent_before` seconds of earlier runs that this one resumes.

    Rank 0's clock decides and the decision is broadcast, so all ranks stop after the same
    epoch (a rank that went on alone would wait forever in the next allreduce).
    """

    def __init__(self, seconds: float, spent_before: float = 0.0):
        super().__init__()
        self.seconds = seconds
        self.spent_before = spent_before
        self._start = 0.0
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        over = self.spent_before + time.perf_counter() - self._start >= self.seconds
        if distributed.broadcast_object(over, f"time_budget_{epoch}"):
            self.model.stop_training = True
            self.stopped_epoch = epoch


class AverageNonTrainableVariables(tf.keras.callbacks.Callback):
    """At each epoch end, average the non-trainable variables (batch-norm moving
    statistics) over the ranks, so every rank, the checkpoints and the saved model use
    statistics of all ranks' data and the ranks stay identical."""

    def on_epoch_end(self, epoch, logs=None):
        distributed.average_variables(self.model.non_trainable_variables)


def cosine_multiplier(epochs: int, warmup_epochs: int, min_fraction: float) -> Callable[[float], float]:
    """Learning-rate multiplier at (fractional) epoch `e`: 1 during warm-up, then a cosine
    from 1 down to `min_fraction` at the last epoch."""

    def multiplier(epoch: float) -> float:
        span = max(epochs - warmup_epochs, 1)
        progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
        return min_fraction + (1.0 - min_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier
