"""Divergence: a non-finite loss ends training with one line, and no checkpoint of it is kept.

`StopOnDivergence` replaces Keras' ``TerminateOnNaN``, which only sets ``stop_training``:
the epoch then still ends, and the checkpoint callbacks save the NaN weights over
``last.weights.h5`` and the resumable state, so ``--resume`` would continue from NaN (or,
the state saying "stopped", not at all). Here, the step whose loss is NaN or infinite raises
`TrainingDiverged` at once, before the epoch ends, so every file of the run directory stays
as the last good epoch left it. At the end of each epoch, before the checkpoints are
written, it also checks the epoch's losses (``loss``, ``val_loss``, averaged over the
ranks) and the weights: an update in the epoch's last step can turn the weights non-finite
after the last loss was computed.

Ranks decide together: a step's losses differ between ranks (a poisoned record lives on one
of them), so with several ranks the flag "my loss is not finite" is reduced over the ranks
after every step (one scalar allreduce), and every rank raises at the same step; a rank
stopping alone would leave the others waiting in the next gradient allreduce. The weights
are the same on every rank, so the end-of-epoch check needs no communication.
"""

from __future__ import annotations

import math

import tensorflow as tf

from mpnn import distributed
from mpnn.errors import UserError


class TrainingDiverged(UserError, RuntimeError):
    """Training stopped at a non-finite loss or weight; the message names the epoch and
    step (1-based, as Keras' progress bar counts them) and what to do."""


class StopOnDivergence(tf.keras.callbacks.Callback):
    """Raise `TrainingDiverged` at the first step with a non-finite loss on any rank, and at
    the end of an epoch whose averaged losses or weights are not finite.

    Put it after Horovod's metric averaging and before the checkpoint callbacks (Keras
    calls ``on_epoch_end`` in list order), so a bad epoch is never saved.

    Args:
        steps: training steps per epoch (for the message).
    """

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        mine = loss is not None and not math.isfinite(float(loss))
        # Every rank takes part in the reduction, whatever its own loss.
        if (distributed.any_rank(mine, "divergence") if distributed.size() > 1 else mine):
            what = f"loss is {float(loss)}" if mine else "the loss is not finite on another rank"
            self._stop(what, f"epoch {self._epoch + 1}, step {batch + 1} of {self.steps}")

    def on_epoch_end(self, epoch, logs=None):
        values = {name: (logs or {}).get(name) for name in ("loss", "val_loss")}
        bad = [f"{name} is {float(value)}" for name, value in values.items()
               if value is not None and not math.isfinite(float(value))]
        if not bad and not _all_finite(self.model.trainable_weights):
            bad = ["weights are not finite"]
        if bad:
            self._stop(", ".join(bad), f"the end of epoch {epoch + 1}")

    def _stop(self, what: str, where: str) -> None:
        rate = float(tf.keras.backend.get_value(self.model.optimizer.learning_rate))
        done = self._epoch
        resume = (
            f"the run directory keeps epoch {done}, the last good one: continue it with --resume and a lower "
            f"--learning-rate" if done else "no epoch was completed: start again with a lower --learning-rate"
        )
        raise TrainingDiverged(f"training diverged at {where}: {what} (learning rate {rate:.3g}); {resume}")


def _all_finite(weights: list[tf.Variable]) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in weights)
