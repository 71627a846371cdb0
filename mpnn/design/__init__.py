"""Reward-guided design of water-cluster hydrogen-bond networks (the ExaLearn design slides).

- `mpnn.design.graph`: `WaterNetwork`, a cluster as atoms and typed bonds, no coordinates;
- `mpnn.design.reward`: the graph-theoretic penalties and the reward built on a surrogate;
- `mpnn.design.edits`: the one-step edits the search proposes;
- `mpnn.design.search`: Algorithm 1 and the ``mpnn-design`` command.
"""
