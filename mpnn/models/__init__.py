"""Model families (one module each, with a ``build_*`` function), chosen and sized from a
data set's manifest, and model loading."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import tensorflow as tf
from nfp.layers import RBFExpansion

import mpnn.attention  # noqa: F401  (registers the attention layers with Keras)
import mpnn.layers  # noqa: F401  (registers our layers with Keras)
from mpnn.graph_format.manifest import Manifest
from mpnn.models.gat_lspe import GATLSPEConfig, build_gat_lspe
from mpnn.models.mpnn import MPNNConfig, build_mpnn

# nfp does not register its layers with Keras. Keras then resolves a serialised
# "RBFExpansion" only where it is given as a custom object; elsewhere (e.g. when
# `clone_model` rebuilds a nested functional model from its config) Keras 2.15 silently
# returns the class name instead of a layer and fails later with "'str' object is not
# callable". Registered under its plain name, it resolves everywhere, also in old files.
tf.keras.utils.get_custom_objects().setdefault("RBFExpansion", RBFExpansion)

# The model each kind of data set trains by default, and each model's training defaults
# (used where the user sets nothing): the MPNN fits energies with a Huber loss (delta 1
# kcal/mol: quadratic for the typical residual, linear for outliers), which on the water
# tutorial split beat the MAE loss it had before (BENCHMARKS.md, issue 14: test MAE 0.748
# against 0.77-0.80 after 32 epochs; 0.831 against 0.847 validation after 12) at no cost;
# GAT-LSPE follows the PDBbind study (MSE, weight decay 1e-4). Neither averages its
# weights by default (`ema_momentum` 0: no gain measured on the water split).
DEFAULT_MODEL = {"water": "mpnn", "pdbbind": "gat-lspe"}
CONFIGS = {"mpnn": MPNNConfig, "gat-lspe": GATLSPEConfig}
TRAINING_DEFAULTS = {
    "mpnn": {"loss": "huber", "weight_decay": 0.0, "ema_momentum": 0.0},
    "gat-lspe": {"loss": "mse", "weight_decay": 1e-4, "ema_momentum": 0.0},
}


def choose_model(requested: str, manifest: Manifest) -> str:
    """`requested`, or the default for the manifest's kind when it is ``"auto"``."""
    if requested != "auto":
        if requested not in CONFIGS:
            raise ValueError(f"unknown model {requested!r}; choose from {sorted(CONFIGS)}")
        return requested
    kind = manifest.kind
    if kind not in DEFAULT_MODEL:
        raise ValueError(f"no default model for data of kind {kind!r}; pass --model")
    return DEFAULT_MODEL[kind]


def model_config(name: str, options: dict[str, Any]) -> Any:
    """The architecture dataclass of model `name` with `options` overriding its defaults."""
    config_class = CONFIGS[name]
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {sorted(unknown)}; it has {sorted(known)}")
    return config_class(**options)


# Model families whose per-graph outputs do not depend on the other graphs of a batch, so
# that cutting a batch (`mpnn.batch_cut`) changes no result; GAT-LSPE's batch normalisation
# takes statistics over the whole batch.
CUTTABLE = ("mpnn",)


def batch_cut_for(name: str, planned: int) -> int:
    """The groups a training batch of model `name` is cut into: the thread plan's
    `planned` cut (`mpnn.distributed.ThreadPlan.batch_cut`) for a model in `CUTTABLE`,
    else 1."""
    return planned if name in CUTTABLE else 1


def build_from_manifest(name: str, config: Any, manifest: Manifest) -> tf.keras.Model:
    """Build model `name` with architecture `config`, sized (and for the MPNN initialised)
    from the manifest."""
    features = manifest.features
    if name == "mpnn":
        stats = manifest.target_stats
        atom_vocab = manifest.vocab["atom"]
        output_scale = stats.residual_std / math.sqrt(max(stats.atoms_per_graph_mean, 1.0))
        return build_mpnn(
            config,
            n_atom_types=len(atom_vocab),
            n_bond_types=len(manifest.vocab["bond"]),
            atom_type_means=[stats.per_atom_type_mean[t] for t in atom_vocab],
            graph_offset=stats.graph_offset,
            output_scale=max(output_scale, 1e-3),
            with_distance="distance" in features,
        )
    missing = [f for f in ("atom_features", "rwpe") if f not in features]
    if missing:
        raise ValueError(f"gat-lspe needs the record features {missing}, which this data set lacks")
    return build_gat_lspe(
        config,
        n_node_features=features["atom_features"]["inner_shape"][0],
        rwpe_order=features["rwpe"]["inner_shape"][0],
        n_edge_types=len(manifest.vocab["bond"]),
    )


def model_inputs(model: tf.keras.Model, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The entries of a merged batch (see `mpnn.data`) that `model` takes; records may carry
    more features than a model uses (e.g. distances for a model trained without them)."""
    return {name: batch[name] for name in model.input_names}


def load_model(path: str) -> tf.keras.Model:
    """Load a model saved by `mpnn-train` (``model.keras``) for prediction."""
    return tf.keras.models.load_model(path, compile=False)
