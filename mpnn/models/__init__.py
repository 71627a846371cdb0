"""Model families, one module each, named in one registry (`FAMILIES`): the family's
options dataclass, its builder from a data set's manifest, its training defaults and
whether its batches may be cut; and the model's inputs, saving and loading.

=========  ===========================  =========================  ===========  =====
family     module                       options                    loss, decay  cut
=========  ===========================  =========================  ===========  =====
mpnn       `mpnn.models.gilmer`         `MPNNConfig`               huber, 0     yes
gat-lspe   `mpnn.models.gat_lspe`       `GATLSPEConfig`            mse, 1e-4    no
schnet     `mpnn.models.schnet`         `SchNetConfig`             mse, 0       no
=========  ===========================  =========================  ===========  =====

The flag values (``--family``) are `mpnn.config.ModelName`; this module checks at import
that both name the same families.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import tensorflow as tf
from nfp.layers import RBFExpansion

from mpnn import settings
from mpnn.config import ModelName
from mpnn.errors import InputError, UsageError
from mpnn.graph_format.manifest import Manifest
# attention, continuous_filter and layers register our layers with Keras (package "mpnn")
# on import, so a saved model of any family loads once this package is imported.
from mpnn.models import attention, continuous_filter, gat_lspe, gilmer, layers, schnet  # noqa: F401

# nfp does not register its layers with Keras. Keras then resolves a serialised
# "RBFExpansion" only where it is given as a custom object; elsewhere (e.g. when
# `clone_model` rebuilds a nested functional model from its config) Keras 2.15 silently
# returns the class name instead of a layer and fails later with "'str' object is not
# callable". Registered under its plain name, it resolves everywhere, also in old files.
tf.keras.utils.get_custom_objects().setdefault("RBFExpansion", RBFExpansion)


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    Attributes:
        name: the ``--family`` value.
        options: the frozen architecture dataclass (``--width``, ... and ``model_options``).
        build: ``build(options, manifest) -> tf.keras.Model``, sized (and initialised) from
            the manifest.
        loss, weight_decay, ema_momentum: training defaults where the user sets none
            (``--loss auto``, no ``--weight-decay`` / ``--ema-momentum``).
        cuttable: per-graph outputs do not depend on the other graphs of a batch, so
            cutting a batch (`mpnn.batch_cut`) changes no result (GAT-LSPE's batch
            normalisation takes statistics over the whole batch).
        default_for: kinds of data set (``manifest.kind``) this family trains by default.
        check_data: ``check_data(manifest)`` raises `ManifestError` (naming the data set)
            when the family cannot learn from its records; None: any records do.
    """

    name: str
    options: type
    build: Callable[[Any, Manifest], tf.keras.Model]
    loss: str
    weight_decay: float
    ema_momentum: float
    cuttable: bool
    default_for: tuple[str, ...]
    check_data: Callable[[Manifest], None] | None = None

    @property
    def option_names(self) -> frozenset[str]:
        """The fields of `options` (what ``model_options`` may set)."""
        return frozenset(f.name for f in dataclasses.fields(self.options))


# The MPNN fits energies with a Huber loss (delta 1 kcal/mol: quadratic for the typical
# residual, linear for outliers), which on the water tutorial split beat the MAE loss it had
# before (benchmarks/log/2026-12-02-accuracy-session-2.md, "Issue 14"; 4-step model: test MAE 0.748
# against 0.77-0.80 after 32 epochs; 0.815 against 0.839 after 12) at no cost; GAT-LSPE
# follows the PDBbind study (MSE, weight decay 1e-4). Neither averages its weights by
# default (no gain measured on the water split).
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily("mpnn", gilmer.MPNNConfig, gilmer.build_from_manifest, "huber", 0.0, 0.0, True, ("water",)),
        ModelFamily("gat-lspe", gat_lspe.GATLSPEConfig, gat_lspe.build_from_manifest, "mse", 1e-4, 0.0, False,
                    ("pdbbind",)),
        ModelFamily("schnet", schnet.SchNetConfig, schnet.build_from_manifest, "mse", 0.0, 0.0, False, (),
                    schnet.check_data),
    )
}
if set(FAMILIES) != set(ModelName.values()) - {ModelName.AUTO.value}:
    raise RuntimeError(f"mpnn.config.ModelName {ModelName.values()} and mpnn.models.FAMILIES {sorted(FAMILIES)} differ")


def family(name: str) -> ModelFamily:
    """The registered family `name`.

    Raises:
        ValueError: no family has that name.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(FAMILIES)}")
    return FAMILIES[name]


def choose_model(requested: str, manifest: Manifest) -> str:
    """`requested`, or the default for the manifest's kind when it is ``"auto"``."""
    if requested != ModelName.AUTO.value:
        return family(requested).name
    for candidate in FAMILIES.values():
        if manifest.kind in candidate.default_for:
            return candidate.name
    raise UsageError(f"argument --family: no default family for data of kind {manifest.kind!r}; pass one")


def check_data(name: str, manifest: Manifest) -> None:
    """Raise `ManifestError` (naming the data set) when model `name` cannot learn from the
    records of `manifest` (e.g. the geometry model on records without coordinates)."""
    chosen = family(name)
    if chosen.check_data is not None:
        chosen.check_data(manifest)


def model_config(name: str, options: dict[str, Any]) -> Any:
    """The architecture dataclass of model `name` with `options` overriding its defaults.

    Raises:
        UsageError: an option the model does not have, or a value of the wrong type (e.g.
            ``edge_updates: maybe`` in a config file).
    """
    chosen = family(name)
    unknown = set(options) - chosen.option_names
    if unknown:
        raise UsageError(f"model {name!r} has no option(s) {sorted(unknown)}; it has {sorted(chosen.option_names)}")
    types = typing.get_type_hints(chosen.options)
    for option, value in options.items():
        if not _is_of_type(value, types[option]):
            kind = getattr(types[option], "__name__", str(types[option]))
            raise UsageError(f"model {name!r} option {option} must be a {kind}, got {value!r}")
    values = chosen.options(**options)
    settings.check(values)
    return values


def option_settings() -> dict[str, settings.Setting]:
    """The architecture options that have flags (``--width``, ...), over all families: each
    name's `Setting` with the help texts of the families that have it joined (``"mpnn:
    ...; schnet: ..."``). A value is checked by each family that has the option."""
    declared: dict[str, list[settings.Setting]] = {}
    for chosen in FAMILIES.values():
        for name, setting in settings.settings_of(chosen.options).items():
            if setting.flag:
                declared.setdefault(name, []).append(setting)
    return {
        name: dataclasses.replace(found[0], help="; ".join(s.help for s in found)) for name, found in declared.items()
    }


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise `UsageError` (naming the flag) for the first of `options` (architecture
    options by name) that family `name` (``"auto"``: any family that has it) does not allow."""
    for chosen in FAMILIES.values() if name == ModelName.AUTO.value else (family(name),):
        declared = settings.settings_of(chosen.options)
        for option, value in options.items():
            if option in declared:
                settings.check_value(option, value, declared[option])


def _is_of_type(value: Any, kind: Any) -> bool:
    """Whether a config-file value fits an options field: bools only for bool fields (a
    YAML ``maybe`` is a str, and a str is truthy), ints also for floats, lists for tuples."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(kind) is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def batch_cut_for(name: str, planned: int) -> int:
    """The groups a training batch of model `name` is cut into: the thread plan's
    `planned` cut (`mpnn.distributed.ThreadPlan.batch_cut`) for a cuttable family, else 1."""
    return planned if family(name).cuttable else 1


def build_from_manifest(name: str, config: Any, manifest: Manifest) -> tf.keras.Model:
    """Build model `name` with architecture `config`, sized (and for the MPNN initialised)
    from the manifest."""
    return family(name).build(config, manifest)


def model_inputs(model: tf.keras.Model, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The entries of a merged batch (see `mpnn.data`) that `model` takes; records may carry
    more features than a model uses (e.g. distances for a model trained without them)."""
    return {name: batch[name] for name in model.input_names}


def type_counts(model: tf.keras.Model) -> dict[str, int]:
    """``{input name: number of types}`` for each type-index input of `model` (``atom``,
    ``bond``) that one of its embeddings reads: what a model file alone tells of the
    vocabularies it was trained with (their names are in its run's manifest). Empty for a
    model whose embeddings sit in a nested model or that takes no type indices."""
    inputs = model.input if isinstance(model.input, dict) else {}
    counts = {}
    for layer in model.layers:
        if not isinstance(layer, tf.keras.layers.Embedding):
            continue
        try:
            read = layer.input
        except AttributeError:  # Keras' answer for a layer called more than once: not an input's
            continue
        counts.update({name: layer.input_dim for name, tensor in inputs.items() if tensor is read})
    return counts


def batch_entries(input_names: Sequence[str], manifest: Manifest) -> list[str]:
    """The batch entries the loader should parse for a model taking `input_names`
    (`mpnn.data.make_dataset`'s `entries`): its inputs, and the forces of records that carry
    them for a model that sees geometry (takes ``positions``)."""
    entries = list(input_names)
    if "positions" in entries and "forces" in manifest.features:
        entries.append("forces")
    return entries


def only_model_inputs(dataset: tf.data.Dataset, model: tf.keras.Model) -> tf.data.Dataset:
    """Drop the batch features `model` does not take from a dataset of (inputs, target);
    batches that carry ``forces`` (see `batch_entries`) become ``(inputs, (energy,
    forces))``, what `mpnn.forces.ForceTrainer` fits."""

    def split(inputs, target):
        if "forces" in inputs:
            return model_inputs(model, inputs), (target, inputs["forces"])
        return model_inputs(model, inputs), target

    return dataset.map(split)


def save_for_inference(model: tf.keras.Model, path: str) -> None:
    """Save architecture and weights of `model`, which must be uncompiled (training
    compiles its twin, `mpnn.batch_cut.cut_batch_trainer`, not the model), so the file holds
    no (Horovod-wrapped) optimizer and loads anywhere with `load_model`."""
    if getattr(model, "optimizer", None) is not None:
        raise ValueError(f"save_for_inference: model {model.name!r} is compiled; save the uncompiled model")
    model.save(path)


def load_model(path: str) -> tf.keras.Model:
    """Load a model saved by `mpnn-train` (``model.keras``) for prediction.

    Raises:
        InputError: a missing, damaged or foreign file, or one saved by a newer Keras
            (naming the file and the stack it loads on).
    """
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such model file")
    try:
        return tf.keras.models.load_model(path, compile=False)
    # What a damaged or foreign file raises while Keras unzips and rebuilds it.
    except (OSError, ValueError, KeyError, TypeError, EOFError, tf.errors.OpError) as exc:
        saved, running = saved_keras_version(path), keras_version()
        if saved is not None and _minor(saved) > _minor(running):
            raise InputError(
                f"{path}: saved by Keras {saved}, this environment has Keras {running}: a model.keras of the "
                "current stack (TensorFlow 2.21, tf-keras) loads there only; use that stack's .venv-current "
                "(scripts/setup.sh, MPNN_STACK=current)"
            ) from exc
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable saved model ({reason[:200]})") from exc


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def saved_keras_version(path: str) -> str | None:
    """The Keras version a ``.keras`` file records (its ``metadata.json``), None if unreadable."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return str(json.loads(archive.read("metadata.json"))["keras_version"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def keras_version() -> str:
    """The version of the Keras that ``tf.keras`` is (tf-keras or the keras package)."""
    from mpnn.host import keras_version as described

    return described().split()[-1]
