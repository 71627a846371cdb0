"""One rank of `test_engines.test_a_custom_train_step_steps_on_the_mean_gradient`: a model whose
own ``train_step`` (a tape of its own, then ``minimize`` or ``apply_gradients``, as a geometry
model with forces does) takes one SGD step on rank-dependent data; prints its weight.

Usage: python custom_step_worker.py ENGINE PATH  (PATH: minimize or apply_gradients)
"""

from __future__ import annotations

import sys

import mpnn  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from mpnn import distributed

LEARNING_RATE = 0.1


class OwnStep(tf.keras.Model):
    """``y = w * x``; loss ``(w x - y)^2`` computed in its own tape; `path` says how it steps."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.w = self.add_weight(name="w", shape=(), initializer="zeros")

    def call(self, x):
        return self.w * x

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            # compute_loss: Keras' compiled loss, divided by the replica count under a strategy.
            loss = self.compute_loss(x, y, self(x, training=True))
        if self.path == "minimize":
            self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        else:
            self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
        return {"loss": loss}


def main(engine: str, path: str) -> None:
    distributed.init(engine=engine)
    rank = distributed.rank()
    with distributed.scope():
        model = OwnStep(path)
        model.compile(optimizer=distributed.distributed_optimizer(tf.keras.optimizers.SGD(LEARNING_RATE)), loss="mse")
    # Rank r fits y = r + 1 at x = 1: its own gradient at w = 0 is -2 (r + 1).
    data = tf.data.Dataset.from_tensors((tf.ones([1]), tf.fill([1], float(rank + 1)))).repeat()
    model.fit(distributed.distribute(data), steps_per_epoch=1, epochs=1, verbose=0)
    print(f"rank {rank} w {float(model.w.numpy()):.6f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
