"""``mpnn-export``: a trained run as a TensorFlow SavedModel that loads without mpnn or nfp.

The export directory holds the SavedModel (``saved_model.pb``, ``variables/``) with one
serving signature, ``serving_default``, on the merged graph tensors of `mpnn.data`, and
`mpnn.rundir.EXPORT_METADATA`, a JSON file with everything needed to build those tensors
and read the output: schema version, vocabularies, units (and eV per unit), target
statistics of the training data, the bond criterion of `data_prep.water` (topology models)
or the pair cutoff (geometry models) and the input signature. Plain TensorFlow loads it::

    loaded = tf.saved_model.load("export")
    energy = loaded.signatures["serving_default"](
        atom=..., bond=..., connectivity=..., node_graph_indices=...)["energy"]

Inputs for a batch of B graphs with N atoms and E directed edges in all (each graph's
nodes numbered after those of the graphs before it, edges in both directions, sorted by
receiver; graph i's atoms have ``node_graph_indices`` i, every graph has at least one atom):
``atom [N] int32`` (vocab ``atom``), ``bond [E] int32`` (vocab ``bond``),
``connectivity [E, 2] int32`` (receiver, sender), ``node_graph_indices [N] int32``, and
``distance [E] float32`` (Angstrom) when the metadata's ``inputs`` lists it. Output
``energy [B] float32`` in the metadata's ``target.units``.

A geometry model (`mpnn.models.schnet`; the metadata's ``inputs`` list ``positions``)
takes ``atom [N] int32``, ``positions [N, 3] float32`` (Angstrom), ``pair_connectivity
[P, 2] int32`` and ``node_graph_indices [N] int32``, and returns ``energy [B]`` and
``forces [N, 3] float32`` (``-dE/dR``, computed inside the serving function with a
gradient tape; the metadata's ``outputs.forces.units``, the energy unit per Angstrom). The
pairs are every ordered pair (i, j), i != j, of atoms of the same graph closer than the
metadata's ``geometry.cutoff``, as (receiver i, sender j), sorted by receiver (then
sender), numbered in the batch like the atoms; with NumPy, for one structure::

    i, j = np.nonzero((np.linalg.norm(x[:, None] - x[None], axis=-1) < cutoff) & ~np.eye(len(x), dtype=bool))
    pair_connectivity = np.stack([i, j], axis=1)  # already sorted by receiver, then sender
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from typing import Any, Sequence

import tensorflow as tf

from data_prep.geometry import MAX_NEIGHBOURS, MIN_DISTANCE
from data_prep.water import MAX_COVALENT_OH, MAX_HBOND_ANGLE, MAX_HBOND_OO
from mpnn import atomic
from mpnn.errors import InputError, ModelError
from mpnn.forces import energy_and_forces, takes_positions
from mpnn.graph_format.features import FEATURES, SCHEMA_VERSION
from mpnn.predict import EV_PER_UNIT, check_force_units, check_water_metadata, run_metadata
from mpnn.rundir import EXPORT_METADATA, RunDir, locate_model

log = logging.getLogger("mpnn-export")

EXPORT_FORMAT_VERSION = 1
_DTYPES = {"int64": tf.int32, "float32": tf.float32}  # merged batches carry int32 indices


def input_signature(input_names: Sequence[str]) -> dict[str, tf.TensorSpec]:
    """The serving signature's inputs: the merged-batch tensors of `input_names`."""
    specs = {}
    for name in input_names:
        if name == "node_graph_indices":
            specs[name] = tf.TensorSpec([None], tf.int32, name=name)
        else:
            feature = FEATURES[name]
            specs[name] = tf.TensorSpec([None, *feature.inner_shape], _DTYPES[feature.dtype], name=name)
    return specs


class _Serving(tf.Module):
    """The model's forward pass as a `tf.function` with a fixed signature (its variables
    are tracked through the model attribute); for a geometry model, energies and forces."""

    def __init__(self, model: tf.keras.Model):
        super().__init__(name="mpnn_export")
        self.model = model
        specs = input_signature(model.input_names)
        with_forces = takes_positions(model)

        @tf.function(input_signature=[specs])
        def serve(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            if with_forces:  # the gradient is taken here, at tracing: the saved graph holds it
                energy, forces = energy_and_forces(self.model, inputs)
                return {"energy": energy, "forces": forces}
            return {"energy": self.model(inputs, training=False)}

        self.serve = serve


def export_metadata(run: RunDir, input_names: Sequence[str], cutoff: float | None = None) -> dict[str, Any]:
    """The JSON written beside the SavedModel (see the module docstring); `cutoff` is a
    geometry model's pair cutoff (Angstrom), None for other models.

    Raises:
        ModelError: when the run's data manifest (vocabularies, statistics) cannot be read,
            or states forces in another unit than the energies' per Angstrom.
    """
    run_dir = run.path
    metadata = run_metadata(run)
    check_water_metadata(run_dir, metadata)
    if not metadata.get("vocab") or not metadata.get("target"):
        raise ModelError(
            f"{run_dir}: cannot find the training data's manifest.json (from config.json's 'data'), "
            "which holds the vocabularies and target statistics the export records"
        )
    units = metadata["target"]["units"]
    outputs = {"energy": {"dtype": "float32", "shape": [None], "units": units}}
    described = {}
    if cutoff is not None:
        check_force_units(run_dir, units, ((metadata.get("geometry") or {}).get("units") or {}).get("forces"))
        outputs["forces"] = {"dtype": "float32", "shape": [None, 3], "units": f"{units}/Angstrom"}
        described["geometry"] = {
            "cutoff": cutoff,
            "units": {"positions": "Angstrom", "forces": f"{units}/Angstrom"},
            "pairs": "every ordered pair (i, j), i != j, of atoms of one structure closer than the cutoff, "
            "as (receiver i, sender j), sorted by receiver then sender",
            "min_distance_angstrom": MIN_DISTANCE,
            "max_neighbours": MAX_NEIGHBOURS,
            "refused": "structures with two atoms closer than min_distance_angstrom or an atom with more than "
            "max_neighbours neighbours within the cutoff were never trained on",
        }
    else:
        described["bond_criterion"] = {
            "covalent": f"each H bonded to its nearest O, within {MAX_COVALENT_OH} Angstrom; every O has two H",
            "max_covalent_oh_angstrom": MAX_COVALENT_OH,
            "hydrogen": "Luzar-Chandler: donor O...acceptor O below the distance, H-O...O angle below the angle; "
            "each H donates at most one hydrogen bond, to the qualifying acceptor closest to it",
            "max_hbond_oo_angstrom": MAX_HBOND_OO,
            "max_hbond_angle_degrees": MAX_HBOND_ANGLE,
        }
    return {
        "format": "mpnn-export",
        "format_version": EXPORT_FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source_run": os.path.abspath(run_dir),
        "kind": metadata.get("kind") or "water",
        "signature": "serving_default",
        "inputs": list(input_names),
        "input_specs": {
            name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
            for name, spec in input_signature(input_names).items()
        },
        "outputs": outputs,
        "vocab": metadata["vocab"],
        "target": metadata["target"],
        "ev_per_unit": EV_PER_UNIT.get(units),
        "target_stats": metadata.get("target_stats"),
        "model": metadata.get("model"),
        "architecture": metadata.get("architecture"),
        **described,
    }


def export_run(model_path: str, output: str) -> str:
    """Export the model of a run (`model_path`: its directory or its ``model.keras``) to
    the directory `output`; returns the path of its metadata JSON.

    Raises:
        InputError: no run's model at `model_path` (or an export, which is exported already).
        ModelError: the run's data manifest cannot be read.
        WriteError: `output` cannot be written (naming it and the cause).
    """
    from mpnn.models import load_model
    from mpnn.models.schnet import model_cutoff

    location = locate_model(model_path)
    if location.kind == "export":
        raise InputError(f"{model_path}: an mpnn-export already; export the run directory it came from")
    model = load_model(location.model_file)
    metadata = export_metadata(location.run, model.input_names, model_cutoff(model))
    serving = _Serving(model)
    # Inference only: the custom gradients of mpnn.models.layers are not saved (and not needed: a
    # geometry model's forces are taken inside the serving function, so saved as its ops).
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    # TensorFlow's file system errors (a missing parent, a read-only or full disk) are ops' errors.
    with atomic.naming(output, (OSError, tf.errors.OpError)):
        tf.saved_model.save(serving, output, signatures={"serving_default": serving.serve}, options=options)
    metadata_path = os.path.join(output, EXPORT_METADATA)
    atomic.write_json(metadata_path, metadata)
    return metadata_path


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m mpnn.export: the command is mpnn-export (or python -m mpnn.cli.export)")
