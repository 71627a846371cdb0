"""Forces as minus the gradient of a model's energy, and the training step that fits energies
and forces together (models that see geometry: `mpnn.models.schnet`).

The saved model maps a batch to energies ``[B]``; forces ``[N, 3]`` are ``-dE/dR`` of the
summed energies with respect to the ``positions`` input (each atom's position enters only
its own graph's energy, so the gradient of the sum is each graph's own), taken with a
`tf.GradientTape` here, for training, evaluation, prediction, the ASE calculator and the
export alike. Units: energies in the target's unit (kcal/mol), positions in Angstrom,
forces in kcal/mol/Angstrom.

The loss of `ForceTrainer`, for a batch of B structures with ``n_b`` atoms each::

    loss = L(E_pred / n_b, E_true / n_b) + force_weight * L(F_pred, F_true)

with L the run's loss (mse, mae or huber) averaged over structures and over force
components: energies per atom, so that clusters of every size weigh alike, and the force
term only when the records carry forces.
"""

from __future__ import annotations

import tensorflow as tf

from mpnn.batch_cut import CutBatchTrainer


def energy_and_forces(
    model: tf.keras.Model, inputs: dict[str, tf.Tensor], training: bool = False
) -> tuple[tf.Tensor, tf.Tensor]:
    """Energies ``[B]`` and forces ``[N, 3]`` (``-dE/dR``) of a geometry model on a batch
    whose ``positions [N, 3]`` it takes (other entries: the model's inputs)."""
    positions = tf.convert_to_tensor(inputs["positions"])
    with tf.GradientTape() as tape:
        tape.watch(positions)
        energy = model({**inputs, "positions": positions}, training=training)
    gradient = tape.gradient(energy, positions, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    # The gradient through `tf.gather` comes as IndexedSlices: one dense row per atom here.
    return energy, -tf.convert_to_tensor(gradient)


def takes_positions(model: tf.keras.Model) -> bool:
    """Whether `model` sees geometry (takes ``positions``), so that it has forces."""
    return "positions" in model.input_names


class ForceTrainer(CutBatchTrainer):
    """The training twin of a geometry model: same layers and weights (so checkpoints are
    the model's), with a training and test step on energies and, when the batches carry them,
    forces (see the module docstring for the loss).

    Batches are ``(inputs, energy [B])`` or ``(inputs, (energy [B], forces [N, 3]))``.
    Logs ``loss``, ``mae`` (energy, target units) and with forces ``force_mae`` (target
    units per Angstrom). Built by `force_trainer`; compile it with an optimizer and a loss
    (`tf.keras.losses.Loss`, applied to both terms).
    """

    def __init__(self, *args, force_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.force_weight = force_weight
        self._loss_tracker = tf.keras.metrics.Mean(name="loss")
        self._energy_mae = tf.keras.metrics.MeanAbsoluteError(name="mae")
        self._force_mae = tf.keras.metrics.MeanAbsoluteError(name="force_mae")

    @property
    def metrics(self):
        return [self._loss_tracker, self._energy_mae, self._force_mae]

    def _loss_and_predictions(self, data, training: bool):
        inputs, targets = data
        energy_true, forces_true = targets if isinstance(targets, (tuple, list)) else (targets, None)
        energy, forces = energy_and_forces(self, inputs, training=training)
        graphs = tf.shape(energy)[0]
        atoms = tf.math.unsorted_segment_sum(
            tf.ones_like(inputs["node_graph_indices"], tf.float32), inputs["node_graph_indices"], graphs
        )
        loss = self.loss(energy_true / atoms, energy / atoms)
        if forces_true is not None and self.force_weight > 0:
            loss += self.force_weight * self.loss(tf.reshape(forces_true, [-1]), tf.reshape(forces, [-1]))
        return loss, energy_true, energy, forces_true, forces

    def _update_metrics(self, loss, energy_true, energy, forces_true, forces) -> dict[str, tf.Tensor]:
        self._loss_tracker.update_state(loss)
        self._energy_mae.update_state(energy_true, energy)
        if forces_true is None:
            return {"loss": self._loss_tracker.result(), "mae": self._energy_mae.result()}
        self._force_mae.update_state(tf.reshape(forces_true, [-1]), tf.reshape(forces, [-1]))
        return {m.name: m.result() for m in self.metrics}

    @tf.autograph.experimental.do_not_convert  # as CutBatchTrainer's steps
    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, *predictions = self._loss_and_predictions(data, training=True)
        # `minimize`, as Keras' own train_step: a Horovod DistributedOptimizer averages the
        # gradients across ranks inside it.
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self._update_metrics(loss, *predictions)

    @tf.autograph.experimental.do_not_convert  # as CutBatchTrainer's steps
    def test_step(self, data):
        loss, *predictions = self._loss_and_predictions(data, training=False)
        return self._update_metrics(loss, *predictions)


def force_trainer(model: tf.keras.Model, groups: int, force_weight: float) -> ForceTrainer:
    """The training twin (`ForceTrainer`) of geometry `model`, cutting batches into `groups`."""
    return ForceTrainer(
        inputs=model.input, outputs=model.output, groups=groups, force_weight=force_weight, name=model.name
    )
