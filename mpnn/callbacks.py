"""Keras callbacks of our own; everything else comes from Keras and Horovod.

`EpochLog` adds timing and the learning rate to the epoch logs (so Keras' `CSVLogger` writes
them to ``log.csv``), `PeakMemory` the largest rank's peak memory; `TimeBudget` stops every
rank together once a time budget is spent; `AverageNonTrainableVariables` keeps batch-norm
statistics identical across ranks; `cosine_multiplier` is the decay applied after warm-up
(by Horovod's `LearningRateScheduleCallback`, or on the tf.distribute engine by
`LearningRateSchedule`, our copy of it, with `warmup_multiplier` for Horovod's warm-up).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import tensorflow as tf

from mpnn import atomic, distributed, host


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


class CsvLog(tf.keras.callbacks.CSVLogger):
    """Keras' `CSVLogger` whose failed write (a full disk, a read-only file system) raises
    `mpnn.atomic.WriteError` naming the log file. Rows are appended, not replaced: a row
    cut short by a full disk belongs to an epoch without checkpoint, which
    `mpnn.checkpoint.trim_log` drops on ``--resume``."""

    def on_train_begin(self, logs=None):
        with atomic.naming(self.filename):
            super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        with atomic.naming(self.filename):
            super().on_epoch_end(epoch, logs)


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


class WeightAverage(tf.keras.callbacks.Callback):
    """Exponential moving average (EMA) of the trainable weights, which is what the
    validation, the checkpoints and so the saved model see.

    After every training step ``average = momentum * average + (1 - momentum) * weights``.
    Before each validation (or, without one, at the epoch end) the averages are swapped into
    the model; `swap_back` (`RawWeightsBack`, placed after the checkpoint callbacks) puts the
    raw weights back for the next epoch's steps, so the optimizer never sees the averages.

    Keras 2's own ``use_ema`` of the optimizers only writes the averages into the model at
    the end of ``fit``, after the validations and checkpoints that pick the best epoch, and
    ignores ``ema_overwrite_frequency``; hence this callback. The averages are not part of
    a resumable checkpoint: a resumed run restarts them from its raw weights. All ranks
    hold the same weights after every step, so their averages agree without exchange.

    Args:
        momentum: weight of the old average per step, in [0, 1).
    """

    def __init__(self, momentum: float):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.averages: list[tf.Variable] = []
        self.raw: list[tf.Variable] = []
        self.swapped = False

    def on_train_begin(self, logs=None):
        if not self.averages:
            weights = self.model.trainable_variables
            self.averages = [tf.Variable(w, trainable=False) for w in weights]
            self.raw = [tf.Variable(w, trainable=False) for w in weights]
        else:  # a second fit (elastic restart): start again from the model's weights
            for average, weight in zip(self.averages, self.model.trainable_variables):
                average.assign(weight)

    @tf.function
    def _update(self) -> None:
        for average, weight in zip(self.averages, self.model.trainable_variables):
            average.assign(self.momentum * average + (1.0 - self.momentum) * weight)

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def swap_in(self) -> None:
        """Keep the raw weights aside and load the averages into the model."""
        if self.swapped:
            return
        for raw, average, weight in zip(self.raw, self.averages, self.model.trainable_variables):
            raw.assign(weight)
            weight.assign(average)
        self.swapped = True

    def swap_back(self) -> None:
        """Load the raw weights back (after the epoch's checkpoints)."""
        if not self.swapped:
            return
        for raw, weight in zip(self.raw, self.model.trainable_variables):
            weight.assign(raw)
        self.swapped = False

    def on_test_begin(self, logs=None):
        self.swap_in()

    def on_epoch_end(self, epoch, logs=None):
        self.swap_in()

    def on_train_end(self, logs=None):
        # Training ends with the averages in the model (what `model.keras` should hold).
        self.swap_in()


class RawWeightsBack(tf.keras.callbacks.Callback):
    """The second half of `WeightAverage`: at the epoch end, after the checkpoint callbacks
    that precede it, give training its raw weights back."""

    def __init__(self, average: WeightAverage):
        super().__init__()
        self.average = average

    def on_epoch_end(self, epoch, logs=None):
        self.average.swap_back()
