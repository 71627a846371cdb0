"""mpnn-export: the SavedModel loads with plain TensorFlow (mpnn and nfp unimportable) and
predicts what the run's model predicts; its metadata says how to feed it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import ase.io
import numpy as np
import pytest

from data_prep.geometry import DEFAULT_CUTOFF
from data_prep.water import MAX_COVALENT_OH, MAX_HBOND_ANGLE, MAX_HBOND_OO
from mpnn.cli.export import main
from mpnn.predict import EXPORT_METADATA, ModelError, PredictOptions, load_trained, predict_files
from tests.helpers import WATER

# The start of a script run in a fresh interpreter where importing mpnn, nfp or data_prep
# fails, as on a machine that has only TensorFlow.
BLOCK_MPNN = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("mpnn", "nfp", "data_prep"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocked())
    import numpy as np
    import tensorflow as tf
    """
)
# Loads each export and predicts the batch saved beside it (arguments: export, batch .npz,
# output .npy, for each export).
PLAIN_TENSORFLOW = BLOCK_MPNN + textwrap.dedent(
    """
    arguments = sys.argv[1:]
    for export, batch_file, out in zip(arguments[::3], arguments[1::3], arguments[2::3]):
        metadata = json.load(open(f"{export}/mpnn_export.json"))
        batch = np.load(batch_file)
        inputs = {name: tf.constant(batch[name]) for name in metadata["inputs"]}
        energy = tf.saved_model.load(export).signatures[metadata["signature"]](**inputs)["energy"]
        np.save(out, energy.numpy())
    assert not any(name.split(".")[0] in ("mpnn", "nfp") for name in sys.modules)
    """
)
# Loads a geometry export and predicts energies and forces of structures given as atom types
# and positions, building the batch as the export's docstring says (pairs closer than the
# metadata's cutoff, by NumPy; arguments: export, structures .npz, output .npz).
PLAIN_TENSORFLOW_GEOMETRY = BLOCK_MPNN + textwrap.dedent(
    """
    export, structures_file, out = sys.argv[1:]
    metadata = json.load(open(f"{export}/mpnn_export.json"))
    cutoff = metadata["geometry"]["cutoff"]
    structures = np.load(structures_file)
    atom, positions, pairs, graph = [], [], [], []
    for k in range(int(structures["count"])):
        x = structures[f"positions_{k}"]
        close = (np.linalg.norm(x[:, None] - x[None], axis=-1) < cutoff) & ~np.eye(len(x), dtype=bool)
        i, j = np.nonzero(close)
        pairs.append(np.stack([i, j], axis=1) + sum(map(len, positions)))
        atom.append(structures[f"atom_{k}"])
        positions.append(x)
        graph.append(np.full(len(x), k))
    outputs = tf.saved_model.load(export).signatures[metadata["signature"]](
        atom=tf.constant(np.concatenate(atom), tf.int32),
        positions=tf.constant(np.concatenate(positions), tf.float32),
        pair_connectivity=tf.constant(np.concatenate(pairs), tf.int32),
        node_graph_indices=tf.constant(np.concatenate(graph), tf.int32),
    )
    np.savez(out, energy=outputs["energy"].numpy(), forces=outputs["forces"].numpy())
    assert not any(name.split(".")[0] in ("mpnn", "nfp") for name in sys.modules)
    """
)
PLAIN_ENV = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _minima_batch(model_inputs) -> dict[str, np.ndarray]:
    """A merged batch of the 28 minima, as the loader makes it."""
    import tensorflow as tf

    from data_prep.structures import read_structures
    from data_prep.water import water_graph
    from mpnn.data import merge_batch, parse_spec
    from mpnn.graph_format.example import serialize_graph
    from mpnn.graph_format.features import feature_dtypes

    names = ["n_atom", "n_bond", "atom", "bond", "connectivity", "distance"]
    records = []
    for path in sorted((WATER / "minima").glob("*.xyz")):
        structure = next(read_structures(str(path)))
        records.append(serialize_graph(water_graph(structure.atoms, structure.energy), feature_dtypes(names)))
    merged = merge_batch(tf.io.parse_example(tf.constant(records), parse_spec(names)))
    return {name: merged[name].numpy() for name in model_inputs}


@pytest.fixture(scope="module")
def exports(distance_run, topology_run, tmp_path_factory) -> dict:
    """Each small trained run and its export by mpnn-export, by name: (run, export)."""
    made = {}
    for name, run_dir in (("distance", distance_run), ("topology", topology_run)):
        export = tmp_path_factory.mktemp("exports") / name
        assert main(["--model", str(run_dir), "-o", str(export)]) == 0
        made[name] = (run_dir, export)
    return made


@pytest.mark.integration  # a second interpreter importing TensorFlow
def test_export_predicts_like_the_run_with_plain_tensorflow(exports, tmp_path):
    from mpnn.models import load_model

    arguments, expected = [], {}
    for name, (run_dir, export) in exports.items():
        model = load_model(str(run_dir / "model.keras"))
        batch = _minima_batch(model.input_names)
        expected[name] = model(batch, training=False).numpy()
        np.savez(tmp_path / f"{name}-batch.npz", **batch)
        arguments += [str(export), str(tmp_path / f"{name}-batch.npz"), str(tmp_path / f"{name}-out.npy")]
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_TENSORFLOW)
    result = subprocess.run(  # one interpreter for both exports
        [sys.executable, str(script), *arguments],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,  # not the repository: no mpnn on the path
        env=PLAIN_ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name, energies_expected in expected.items():
        energies = np.load(tmp_path / f"{name}-out.npy")
        assert energies.shape == (28,), name
        np.testing.assert_allclose(energies, energies_expected, rtol=1e-6, atol=1e-4, err_msg=name)


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_export_metadata_records_the_training_data(exports, water_dataset):
    _, export = exports["topology"]
    metadata = json.loads((export / EXPORT_METADATA).read_text())
    manifest = json.loads((water_dataset / "manifest.json").read_text())
    assert metadata["schema_version"] == manifest["schema_version"]
    assert metadata["vocab"] == manifest["vocab"] == {"atom": ["O", "H"], "bond": ["covalent", "hydrogen"]}
    assert metadata["target"] == manifest["target"]
    assert metadata["target_stats"] == manifest["target_stats"]
    assert metadata["ev_per_unit"] == pytest.approx(0.0433641, rel=1e-5)  # eV per kcal/mol
    assert "distance" not in metadata["inputs"]
    criterion = metadata["bond_criterion"]
    assert (criterion["max_covalent_oh_angstrom"], criterion["max_hbond_oo_angstrom"],
            criterion["max_hbond_angle_degrees"]) == (MAX_COVALENT_OH, MAX_HBOND_OO, MAX_HBOND_ANGLE)


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_mpnn_predict_takes_an_export(exports, tmp_path):
    distance_run, export = exports["distance"]
    options = PredictOptions(show_progress=False)
    for source, out in ((distance_run, "run.csv"), (export, "export.csv")):
        predict_files(load_trained(str(source)), [str(WATER / "minima")], str(tmp_path / out), options)
    run_rows = (tmp_path / "run.csv").read_text().splitlines()
    export_rows = (tmp_path / "export.csv").read_text().splitlines()
    assert len(run_rows) == 29
    for a, b in zip(run_rows[1:], export_rows[1:]):
        assert a.split(",")[:3] == b.split(",")[:3]
        assert float(a.split(",")[3]) == pytest.approx(float(b.split(",")[3]), abs=1e-4)


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_a_run_without_its_manifest_cannot_be_exported(topology_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(topology_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["data"] = str(tmp_path / "gone")
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["--model", str(run_dir), "-o", str(tmp_path / "export")]) == 1
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_an_export_that_cannot_be_written_is_one_line_naming_it(topology_run, tmp_path, capsys):
    (tmp_path / "file").write_text("a file where the export's parent directory should be\n")
    output = tmp_path / "file" / "export"
    assert main(["--model", str(topology_run), "-o", str(output)]) == 1
    err = capsys.readouterr().err
    assert f"mpnn-export: error: cannot write {output}: " in err and "Traceback" not in err


@pytest.fixture(scope="module")
def geometry_export(geometry_run, tmp_path_factory):
    export = tmp_path_factory.mktemp("exports") / "geometry"
    assert main(["--model", str(geometry_run), "-o", str(export)]) == 0
    return export


@pytest.mark.integration  # a geometry model trained for the session, and a second interpreter
def test_geometry_export_gives_energy_and_forces_with_plain_tensorflow(geometry_run, geometry_export, tmp_path):
    """Six minima (3 to 8 waters) in one batch, the pairs built from the metadata's cutoff by
    NumPy alone: the energies and forces of the run's model in the package (float32 both
    ways, the same operations: agreement to rounding)."""
    from data_prep.geometry import geometry_features
    from data_prep.water import water_graph

    model = load_trained(str(geometry_run))
    structures, graphs = {}, []
    for k, waters in enumerate(range(3, 9)):
        atoms = ase.io.read(str(WATER / "minima" / f"w{waters}_lowest.xyz"))
        graphs.append({**water_graph(atoms, 0.0), **geometry_features(atoms, model.cutoff)})
        structures[f"atom_{k}"], structures[f"positions_{k}"] = graphs[-1]["atom"], atoms.positions
    np.savez(tmp_path / "structures.npz", count=len(graphs), **structures)
    energies, forces = model.predict_graphs_with_forces(graphs)
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_TENSORFLOW_GEOMETRY)
    result = subprocess.run(
        [sys.executable, str(script), str(geometry_export), str(tmp_path / "structures.npz"),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=PLAIN_ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    exported = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(exported["energy"], energies, rtol=1e-5)
    forces = np.concatenate(forces)
    assert exported["forces"].shape == forces.shape == (3 * sum(range(3, 9)), 3)
    np.testing.assert_allclose(exported["forces"], forces, rtol=1e-5, atol=1e-5 * np.abs(forces).max())


@pytest.mark.integration  # a geometry model trained for the session (tests/mpnn/conftest.py)
def test_geometry_export_metadata_states_cutoff_and_units(geometry_export, geometry_dataset):
    metadata = json.loads((geometry_export / EXPORT_METADATA).read_text())
    manifest = json.loads((geometry_dataset / "manifest.json").read_text())
    assert metadata["inputs"] == ["atom", "node_graph_indices", "pair_connectivity", "positions"]
    assert metadata["geometry"]["cutoff"] == manifest["geometry"]["cutoff"] == DEFAULT_CUTOFF
    assert metadata["geometry"]["units"] == {"positions": "Angstrom", "forces": "kcal/mol/Angstrom"}
    assert metadata["outputs"]["forces"] == {"dtype": "float32", "shape": [None, 3], "units": "kcal/mol/Angstrom"}
    assert "bond_criterion" not in metadata  # the model reads no bonds


@pytest.mark.integration  # a geometry model trained for the session (tests/mpnn/conftest.py)
def test_forces_stated_in_another_unit_are_refused(geometry_export, tmp_path):
    import shutil

    export = tmp_path / "export"
    shutil.copytree(geometry_export, export)
    metadata = json.loads((export / EXPORT_METADATA).read_text())
    metadata["outputs"]["forces"]["units"] = "eV/Angstrom"
    (export / EXPORT_METADATA).write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match="forces stated in 'eV/Angstrom', energies in 'kcal/mol'"):
        load_trained(str(export))


@pytest.mark.integration  # a geometry model trained for the session (tests/mpnn/conftest.py)
def test_the_calculator_takes_a_geometry_export(geometry_run, geometry_export):
    from mpnn.ase import MPNNCalculator

    results = []
    for source in (geometry_run, geometry_export):
        atoms = ase.io.read(str(WATER / "minima" / "w7_lowest.xyz"))
        atoms.calc = MPNNCalculator(str(source))
        results.append((atoms.get_potential_energy(), atoms.get_forces()))
    (run_energy, run_forces), (export_energy, export_forces) = results
    assert export_energy == pytest.approx(run_energy, rel=1e-6)
    np.testing.assert_allclose(export_forces, run_forces, rtol=1e-5, atol=1e-6 * np.abs(run_forces).max())


@pytest.mark.integration  # small models trained for the session (tests/mpnn/conftest.py)
@pytest.mark.parametrize("model", ["distance", "geometry"])
def test_mpnn_evaluate_takes_an_export_and_gives_the_metrics_of_its_run(
    model, exports, geometry_export, geometry_run, minima_dataset, geometry_dataset, tmp_path
):
    from mpnn.cli.evaluate import main as evaluate

    run_dir, export = exports["distance"] if model == "distance" else (geometry_run, geometry_export)
    data = minima_dataset if model == "distance" else geometry_dataset
    metrics = {}
    for name, source in (("run", run_dir), ("export", export)):
        assert evaluate(["--model", str(source), "--data", str(data), "--json", str(tmp_path / f"{name}.json")]) == 0
        metrics[name] = json.loads((tmp_path / f"{name}.json").read_text())
    run, exported = metrics["run"], metrics["export"]
    assert exported["count"] == run["count"] > 0
    for key in ("mae", "rmse"):
        assert exported[key] == pytest.approx(run[key], rel=1e-5, abs=1e-5), key
    if model == "geometry":  # the forces come from the SavedModel's own gradient
        assert exported["forces"]["mae"] == pytest.approx(run["forces"]["mae"], rel=1e-5, abs=1e-5)


# Records a model cannot read: (its run in `exports`, the data fixture, the message after
# "{data}: " for the run and its export, the message for its model file alone).
UNFIT_RECORDS = {
    "without an input of the model": ("distance", "water_dataset", *["its records have no distance, which the model "
                                      "takes: evaluate it on records prepared like those it was trained on"] * 2),
    # a water model's type indices would mean other atoms in PDBbind records; a model file
    # without its run (no training manifest) still knows how many atom types it takes
    "of another kind": ("topology", "pdbbind_dataset", "pdbbind records; {model} was trained on water records",
                        "8 atom types ['B', 'C', 'N', 'O', 'F', 'P', 'S', 'other']; {model} takes 2 (records of "
                        "another kind or vocabulary than it was trained on)"),
}


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
@pytest.mark.parametrize("case", sorted(UNFIT_RECORDS))
def test_mpnn_evaluate_on_records_the_model_cannot_read_is_one_line(case, exports, request, tmp_path, capsys):
    from mpnn.cli.evaluate import main as evaluate

    name, fixture, message, alone_message = UNFIT_RECORDS[case]
    data = request.getfixturevalue(fixture)
    run_dir, export = exports[name]
    alone = tmp_path / "model.keras"  # copied out of its run directory
    shutil.copy(run_dir / "model.keras", alone)
    for source, expected in ((run_dir, message), (export, message), (alone, alone_message)):
        assert evaluate(["--model", str(source), "--data", str(data)]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mpnn-evaluate:")]
        assert errors == [f"mpnn-evaluate: error: {data / 'manifest.json'}: {expected.format(model=source)}"]
