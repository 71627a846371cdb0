"""`WeightAverage`: validation and checkpoints see the moving average, training the raw weights."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mpnn.callbacks import RawWeightsBack, WeightAverage


class _Record(tf.keras.callbacks.Callback):
    """The single weight of the model after every step, or at every epoch end."""

    def __init__(self, at_batch: bool):
        super().__init__()
        self.at_batch = at_batch
        self.values: list[float] = []

    def _take(self):
        self.values.append(float(self.model.trainable_variables[0].numpy().item()))

    def on_train_batch_end(self, batch, logs=None):
        if self.at_batch:
            self._take()

    def on_epoch_end(self, epoch, logs=None):
        if not self.at_batch:
            self._take()


def test_checkpoints_see_the_average_and_training_continues_from_the_raw_weights():
    momentum, rate, steps, epochs = 0.5, 0.1, 3, 2
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.build((None, 1))
    model.compile(optimizer=tf.keras.optimizers.SGD(rate), loss="mse")
    x, y = np.ones((steps, 1), np.float32), np.ones((steps, 1), np.float32)
    average = WeightAverage(momentum)
    raw, at_checkpoint = _Record(at_batch=True), _Record(at_batch=False)
    model.fit(
        x, y, batch_size=1, epochs=epochs, shuffle=False, validation_data=(x, y), verbose=0,
        callbacks=[raw, average, at_checkpoint, RawWeightsBack(average)],
    )
    # Plain SGD on (w - 1)^2 from w = 0, unaffected by the swaps: w <- w - 2 rate (w - 1).
    expected_raw, w = [], 0.0
    for _ in range(steps * epochs):
        w -= 2 * rate * (w - 1.0)
        expected_raw.append(w)
    assert raw.values == pytest.approx(expected_raw, rel=1e-6)
    expected_average, a = [], 0.0
    for w in expected_raw:
        a = momentum * a + (1 - momentum) * w
        expected_average.append(a)
    assert at_checkpoint.values == pytest.approx(expected_average[steps - 1 :: steps], rel=1e-6)
    # Training ends with the average in the model.
    assert float(model.trainable_variables[0].numpy().item()) == pytest.approx(expected_average[-1], rel=1e-6)


def test_momentum_out_of_range_is_refused():
    with pytest.raises(ValueError, match="momentum"):
        WeightAverage(1.0)
