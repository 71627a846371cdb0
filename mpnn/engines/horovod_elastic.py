"""Elastic training (``mpnn-train --elastic``): keep training when workers leave or join.

Run under Horovod's elastic driver with Gloo, e.g. on one machine::

    horovodrun -np 2 --min-np 1 --max-np 2 --host-discovery-script ./hosts.sh \\
        --network-interface lo mpnn-train --elastic --data ... --run-dir ...

(see jobs/README.md for Slurm). The model and optimizer live in a `hvd.elastic.KerasState`
that is committed at the end of every epoch. When a worker dies mid-epoch the others get
an error in the next allreduce; Horovod then rolls them back to the last commit, forms a new
ring of the survivors, and `fit` starts again at the committed epoch. When the discovery
script lists a host again, its new worker joins at the next commit and receives the state
from rank 0. Each (re)start rebuilds the input pipeline for the new rank and rank count
(each record is still seen once per epoch) and the callbacks (rank 0 writes the files).

Membership policy: the per-rank batch and the learning rate stay what they were at the
start, so the global batch follows the number of live workers (with ``--batch-strategy
gbs`` too: the per-rank share of the global batch is fixed at the start) and the learning
rate is not rescaled. Each (re)start logs it (``elastic: N rank(s) x B graphs: global batch
G, learning rate L``). Why keep rather than rescale: a lost worker is usually back within
minutes, and rescaling for the stretch between would put a step into the schedule; the
warm-up and cosine callbacks recompute the rate from the configured one every batch, so a
rescale would also have to rebuild them; and with Adam the step size depends little on the
batch (the update is normalised by the gradient's second moment), so a smaller global
batch at the same rate means noisier gradients, not larger steps. The linear scaling rule
(`mpnn.distributed.scaled_learning_rate`) is applied once, for the ranks at the start.

After training, every rank leaves the elastic loop; a collective now would wait forever
for a worker lost meanwhile. So the final evaluation runs on rank 0 alone (every record of
the evaluated splits), the other ranks end at once, and the cross-rank weight check is
skipped (``weights_identical_across_ranks`` is null in ``metrics.json``): a worker other
than rank 0 lost during the final evaluation changes nothing. If rank 0 itself is lost
then, the job fails; its checkpoints are complete, and ``--resume`` evaluates without
training again.

What a commit holds: rank 0 writes the epoch's log row and checkpoint in its epoch-end
callbacks, and every rank then waits for it in one small collective (`RootWroteEpoch`)
before the commit. So if rank 0 is lost before it has written an epoch (after the epoch's
last gradient allreduce), the survivors do not commit that epoch without its row and
checkpoint: they roll back and the new rank 0 trains it again. The `TrainingState` is
committed as a copy (`EpochState`), so the rolled-back state is the committed one, not one
an unfinished epoch's callbacks have changed since.

A worker that joins later runs the set-up of `mpnn.training.train` alone, while the others
wait in `KerasState.sync`: the set-up must not run collective operations (a broadcast there
would wait forever for partners), so under ``--elastic`` every rank keeps its own values
(`mpnn.distributed.rank0_value`) and `sync` hands out rank 0's weights, epoch and `TrainingState`.
"""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any, Callable

import horovod.tensorflow.keras as hvd
import tensorflow as tf
from horovod.common.exceptions import HorovodInternalError

from mpnn.checkpoint import TrainingState

log = logging.getLogger(__name__)

# CommitStateCallback commits every `batches_per_commit` batches and at each epoch end; an
# unreachable count leaves the epoch-end commits only.
_EPOCH_END_ONLY = sys.maxsize


class RootWroteEpoch(tf.keras.callbacks.Callback):
    """Every rank waits at the end of an epoch until rank 0 has run its epoch-end callbacks
    (log row, checkpoint): put it after them and before the commit. A rank 0 lost before
    then makes this collective fail on the others, who roll back to the last commit instead
    of committing an epoch that was never written."""

    def on_epoch_end(self, epoch, logs=None):
        hvd.allreduce(tf.constant(0), op=hvd.Sum, name=f"rank0_wrote_epoch_{epoch}")


class EpochState(hvd.elastic.UpdateEpochStateCallback):
    """`hvd.elastic.UpdateEpochStateCallback` for a `fit` that starts at
    ``initial_epoch=state.epoch``: Keras' epoch numbers are then absolute (our warm-up,
    schedule, log and checkpoint callbacks need them so), while Horovod's callback expects
    them to start at 0 after each reset and would add the start epoch twice.

    It also puts a copy of `training` (the `TrainingState` this fit's callbacks update) into
    the state for the commit that follows: Horovod's commit keeps a reference, which the next
    epoch's callbacks would change before that epoch is committed."""

    def __init__(self, state: hvd.elastic.KerasState, training: TrainingState):
        super().__init__(state)
        self.training = training

    def on_epoch_end(self, epoch, logs=None):
        self.state.epoch = epoch + 1
        self.state.training = copy.deepcopy(self.training)


def _as_elastic_error(error: tf.errors.UnknownError) -> Exception:
    """What `hvd.elastic.run` must see for an error of a collective op: Horovod 0.28.1's
    wrapper recognises a lost worker only in ops named HorovodAllreduce, -Allgather or
    -Broadcast, not in the HorovodGroupedAllreduce of our optimizer (``groups=1``), and
    silently returns from training on any other `UnknownError`. So: a Horovod op's error
    becomes `HorovodInternalError` (roll back, re-form the ring), anything else a
    `RuntimeError` that ends the run with its traceback."""
    if "Horovod" in error.message:
        return HorovodInternalError(error)
    return RuntimeError(f"training failed: {error.message}")


def fit(
    model: tf.keras.Model,
    training: TrainingState,
    epochs: int,
    fit_arguments: Callable[[int, int, TrainingState], dict[str, Any]],
) -> TrainingState:
    """Train `model` from ``training.epochs_done`` to `epochs` under Horovod elastic.

    Args:
        model: the compiled model (its optimizer wrapped by `hvd.DistributedOptimizer`).
        training: this rank's training state (a resumed run's on rank 0); rank 0's is used.
        epochs: the epoch to stop after.
        fit_arguments: ``(rank, size, training state) -> keyword arguments of model.fit``
            (data, steps, validation, callbacks, verbosity) for the current ring; called at
            each (re)start with a copy of rank 0's last committed training state, which the
            callbacks it returns update.

    Returns:
        rank 0's training state at the end.
    """
    model.optimizer.build(model.trainable_variables)  # KerasState copies its variables
    state = hvd.elastic.KerasState(model, epoch=training.epochs_done, training=training)

    @hvd.elastic.run
    def train(state: hvd.elastic.KerasState) -> None:
        if state.epoch >= epochs or state.training.stopped:
            return
        training = copy.deepcopy(state.training)  # the committed state stays as it was
        arguments = fit_arguments(hvd.rank(), hvd.size(), training)
        if hvd.rank() == 0:
            log.info("elastic: training on %d rank(s) from epoch %d", hvd.size(), state.epoch)
        arguments["callbacks"] = [
            *arguments.get("callbacks", []),
            RootWroteEpoch(),
            EpochState(state, training),
            hvd.elastic.CommitStateCallback(state, batches_per_commit=_EPOCH_END_ONLY),
        ]
        try:
            model.fit(initial_epoch=state.epoch, epochs=epochs, **arguments)
        except tf.errors.UnknownError as exc:
            raise _as_elastic_error(exc) from exc

    train(state)
    return state.training
