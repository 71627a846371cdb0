"""The batch cut: a CPU tuning of training that stays out of every saved model.

On a CPU rank with two or more cores, training runs faster when each merged batch (see
`mpnn.data`) is cut into groups of whole graphs that go through the same model one
group at a time in the graph, so that TensorFlow's inter-op threads run the groups at once
(`mpnn.distributed.thread_plan` chooses the number of groups; RESULTS.md, "Training
throughput"). The cut belongs to the machine, not to the model: `cut_batch_trainer` gives
the model a training twin that shares its layers and weights and cuts each batch, so the
model that is saved, checkpointed and evaluated is the same on 1 core and on 16, and a
checkpoint restores under any cut and any rank count.
"""

from __future__ import annotations

import tensorflow as tf

# The edge sets of a batch: their connectivity entry and the entries with one row per
# edge of the set; every other entry has one row per atom.
EDGE_SETS = {"connectivity": ("bond", "distance"), "pair_connectivity": ()}


def cut_batch(batch: dict[str, tf.Tensor], groups: int) -> list[dict[str, tf.Tensor]]:
    """Cut a merged batch into `groups` merged batches of whole, consecutive graphs.

    Args:
        batch: ``node_graph_indices [N]``, and for each edge set it has (`EDGE_SETS`: the
            bonds, ``connectivity [E, 2]`` (receiver, sender) with ``bond [E]`` and
            optionally ``distance [E]``; the atom pairs of geometry records,
            ``pair_connectivity [P, 2]``) its entries; any other entry is taken as per-atom
            (``[N, ...]``).
        groups: how many batches to make (at least 1).

    Returns:
        `groups` dicts with the same keys, each a valid merged batch on its own
        (connectivity and graph indices start from 0) of about ``N / groups`` atoms;
        concatenating the per-group graph outputs gives the batch's graphs in order. A
        group may be empty when one graph holds more than its share of atoms.

    Relies on the layout of `mpnn.data.merge_batch`: graph indices sorted, and edges sorted
    by receiver (so a graph's edges follow those of the graphs before it).
    """
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    graph = batch["node_graph_indices"]
    edge_sets = [name for name in EDGE_SETS if name in batch]
    n_nodes = tf.shape(graph)[0]
    node_cuts, graph_cuts = [0], [0]
    edge_cuts: dict[str, list] = {name: [0] for name in edge_sets}
    for index in range(1, groups):
        # Cut before the graph that holds atom number index * N / groups.
        first_graph = tf.gather(graph, tf.minimum(n_nodes * index // groups, n_nodes - 1))
        node_cuts.append(tf.reduce_sum(tf.cast(graph < first_graph, tf.int32)))
        for name in edge_sets:
            edge_cuts[name].append(tf.reduce_sum(tf.cast(batch[name][:, 0] < node_cuts[-1], tf.int32)))
        graph_cuts.append(first_graph)
    node_cuts.append(n_nodes)
    for name in edge_sets:
        edge_cuts[name].append(tf.shape(batch[name])[0])
    edge_set_of = {entry: name for name in edge_sets for entry in (name, *EDGE_SETS[name])}
    parts = []
    for index in range(groups):
        n0, n1 = node_cuts[index], node_cuts[index + 1]
        part = {}
        for name, value in batch.items():
            if name in edge_set_of:
                cuts = edge_cuts[edge_set_of[name]]
                part[name] = value[cuts[index] : cuts[index + 1]]
                if name in EDGE_SETS:
                    part[name] -= n0
            elif name == "node_graph_indices":
                part[name] = value[n0:n1] - graph_cuts[index]
            else:
                part[name] = value[n0:n1]
        parts.append(part)
    return parts


class CutBatchTrainer(tf.keras.Model):
    """A functional model's training twin: the same layers and weights, each batch cut
    into `groups` (`cut_batch`) whose per-graph outputs are concatenated.

    Built by `cut_batch_trainer`. It has the model's inputs, outputs and layers, so its
    checkpoints and weight files are those of the model whatever `groups` is; only its
    `call` differs, and Keras' own `train_step`, `test_step` and `predict_step` use it.
    Never saved as a model (save the plain model).
    """

    def __init__(self, *args, groups: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        if groups < 1:
            raise ValueError(f"groups must be at least 1, got {groups}")
        self.groups = groups

    def get_metrics_result(self):
        """The metrics a step reports: under a multi-worker strategy this worker's own, read
        without the all-reduce of every metric variable that Keras runs at every step (four
        collectives per step for the loss and MAE, each a round trip between the workers);
        the engine's `mpnn.engines.tf_distribute.MetricAverage` averages them over the workers at the
        epoch's end, as Horovod's `MetricAverageCallback` does."""
        if tf.distribute.in_cross_replica_context() or tf.distribute.get_strategy().num_replicas_in_sync == 1:
            return super().get_metrics_result()
        # The class's own `result`: Keras wraps each metric's instance method in a sync.
        return {metric.name: type(metric).result(metric) for metric in self.metrics}

    def compile(self, *args, **kwargs):
        """Keras' ``compile``, then the optimizer's variables (its slots): made in the first
        training step instead, they would have the step's ``tf.function`` traced twice, and
        that trace is the longest part of every training process's start."""
        super().compile(*args, **kwargs)
        self.optimizer.build(self.trainable_variables)

    # Autograph is off in the steps and in all they call (the layers, the engine's gradient
    # allreduce): none of it branches or loops on tensors, and converting it to graph code
    # was the larger part of tracing the step at every training process's start. Subclasses
    # that override a step decorate it the same way (`mpnn.forces.ForceTrainer`).
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        return super().train_step(data)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        return super().test_step(data)

    @tf.autograph.experimental.do_not_convert
    def predict_step(self, data):
        return super().predict_step(data)

    def call(self, inputs, training=None, mask=None):
        if self.groups == 1:
            return super().call(inputs, training=training, mask=mask)
        parts = cut_batch(inputs, self.groups)
        return tf.concat([super(CutBatchTrainer, self).call(p, training=training) for p in parts], axis=0)


def cut_batch_trainer(model: tf.keras.Model, groups: int) -> CutBatchTrainer:
    """The training twin of functional `model` (per-graph outputs ``[B, ...]`` from a batch
    dict) that cuts each batch into `groups`; ``groups=1`` trains exactly as `model`."""
    return CutBatchTrainer(inputs=model.input, outputs=model.output, groups=groups, name=model.name)
