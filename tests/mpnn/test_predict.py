"""mpnn-predict on the shipped structures: the same numbers as the converter + evaluator
path, skipped structures with reasons, streaming batches, and clear model errors; a geometry
model's energies and forces in extended XYZ, as its ASE calculator gives them."""

from __future__ import annotations

import csv
import os

import ase.io
import numpy as np
import pytest

from mpnn.cli.predict import main
from mpnn.errors import ModelError
from mpnn.predict import PredictOptions, load_trained, predict_files
from tests.helpers import MINIMA, WATER, write_tip4p_clusters

QUIET = PredictOptions(show_progress=False)


def _rows(path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _evaluated(run_dir, dataset) -> dict[str, float]:
    """Predictions of mpnn-evaluate's code path on every split of a prepared data set, by
    record id (``file.xyz:index``)."""
    from mpnn.data import Manifest
    from mpnn.evaluate import predict_split
    from mpnn.predictions import Predictions
    from mpnn.models import load_model

    model, manifest = load_model(str(run_dir / "model.keras")), Manifest.load(str(dataset))
    splits = [s for s, entry in manifest.splits.items() if entry.records]
    predictions = Predictions.concatenate([predict_split(model, manifest, split, 8) for split in splits])
    return dict(zip(predictions.record_id, predictions.y_pred.astype(float)))


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
@pytest.mark.parametrize("run", ["distance_run", "topology_run"])
def test_predictions_equal_those_of_the_prepared_data_set(run, minima_dataset, tmp_path, request):
    """The 28 minima predicted from their xyz files give what mpnn-prep-water + the
    loader + the model give (a distance model, and a topology model that ignores them)."""
    run_dir = request.getfixturevalue(run)
    out = tmp_path / "minima.csv"
    summary = predict_files(load_trained(str(run_dir)), [str(WATER / "minima")], str(out), QUIET)
    rows = _rows(out)
    assert (summary.predicted, summary.skipped, len(rows)) == (28, 0, 28)
    expected = _evaluated(run_dir, minima_dataset)
    for row in rows:
        name = os.path.basename(row["file"])
        assert int(row["n_waters"]) == int(name[1:].split("_")[0])
        assert float(row["predicted_energy"]) == pytest.approx(expected[f"{name}:{row['index']}"], abs=1e-4)
    w10 = next(row for row in rows if row["file"].endswith("w10_lowest.xyz"))
    assert float(w10["file_energy"]) == pytest.approx(-94.670654, abs=1e-5)


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_tutorial_records_and_batch_size_do_not_change_the_predictions(topology_run, water_dataset, tutorial_subset, tmp_path):
    model = load_trained(str(topology_run))
    big, small = tmp_path / "big.csv", tmp_path / "small.csv"
    predict_files(model, [str(tutorial_subset)], str(big), QUIET)
    predict_files(model, [str(tutorial_subset)], str(small), PredictOptions(batch_size=7, show_progress=False))
    rows, rows_small = _rows(big), _rows(small)
    assert len(rows) == 2000 and [r["index"] for r in rows] == [str(i) for i in range(2000)]
    np.testing.assert_allclose(
        [float(r["predicted_energy"]) for r in rows], [float(r["predicted_energy"]) for r in rows_small], atol=1e-4
    )
    expected = _evaluated(topology_run, water_dataset)
    for row in rows[::50]:
        assert float(row["predicted_energy"]) == pytest.approx(expected[f"subset.proto.gz:{row['index']}"], abs=1e-4)


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_unusable_structures_are_listed_with_their_reason(topology_run, tmp_path):
    lines = MINIMA[0].read_text().splitlines()  # one minimum (w10)
    no_energy = tmp_path / "no_energy.xyz"
    no_energy.write_text("\n".join([lines[0], "", *lines[2:]]) + "\n")
    sodium = tmp_path / "sodium.xyz"
    sodium.write_text("\n".join([str(int(lines[0]) + 1), "-1.0", *lines[2:], "Na 30.0 30.0 30.0"]) + "\n")
    truncated = tmp_path / "truncated.xyz"
    truncated.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    out = tmp_path / "out.csv"
    summary = predict_files(
        load_trained(str(topology_run)), [str(no_energy), str(sodium), str(truncated)], str(out), QUIET
    )
    rows = {os.path.basename(row["file"]): row for row in _rows(out)}
    assert (summary.predicted, summary.skipped) == (1, 2)
    assert rows["no_energy.xyz"]["predicted_energy"] and not rows["no_energy.xyz"]["file_energy"]
    assert "other than O/H: Na" in rows["sodium.xyz"]["skipped"] and not rows["sodium.xyz"]["predicted_energy"]
    assert rows["truncated.xyz"]["skipped"].startswith("unreadable")


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_a_distance_model_on_topology_only_records_is_a_one_line_error(distance_run, tutorial_subset, tmp_path, capsys):
    with pytest.raises(ModelError, match="uses interatomic distances"):
        predict_files(load_trained(str(distance_run)), [str(tutorial_subset)], str(tmp_path / "x.csv"), QUIET)
    code = main(["--model", str(distance_run), str(tutorial_subset), "-o", str(tmp_path / "x.csv"), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and "topology-only" in error


def test_what_is_not_a_model_is_an_error(tmp_path, capsys):
    assert main(["--model", str(tmp_path), str(MINIMA[0]), "-o", str(tmp_path / "x.csv")]) == 1
    assert "neither a run directory" in capsys.readouterr().err


@pytest.mark.integration  # a geometry model trained for the session (tests/mpnn/conftest.py)
def test_geometry_predictions_in_extxyz_are_the_calculators(geometry_run, tmp_path):
    """The minima and a few TIP4P clusters predicted in batches of 7: each frame of the
    extended XYZ is its input structure with the energy (eV) and forces (eV/Angstrom) that
    `MPNNCalculator` gives it."""
    from mpnn.ase import MPNNCalculator

    tip4p = write_tip4p_clusters(tmp_path / "tip4p.extxyz", 10, sizes=(3, 7), seed=5)
    model = load_trained(str(geometry_run))
    out = tmp_path / "out.extxyz"
    options = PredictOptions(batch_size=7, show_progress=False)
    summary = predict_files(model, [str(WATER / "minima"), str(tip4p)], str(out), options)
    assert (summary.predicted, summary.skipped) == (38, 0)
    predicted = ase.io.read(out, index=":")
    assert len(predicted) == 38
    for frame in predicted:
        atoms = ase.io.read(frame.info["source"], index=frame.info["index"])
        assert frame.info["energy_unit"] == "eV" and frame.info["forces_unit"] == "eV/Angstrom"
        assert frame.get_chemical_symbols() == atoms.get_chemical_symbols()
        np.testing.assert_allclose(frame.positions, atoms.positions, atol=1e-5)  # float32, as the model saw them
        atoms.calc = MPNNCalculator(model)
        assert frame.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), rel=1e-6, abs=1e-6)
        forces = atoms.get_forces()
        np.testing.assert_allclose(frame.get_forces(), forces, rtol=1e-5, atol=1e-6 * np.abs(forces).max())
    w10 = next(frame for frame in predicted if frame.info["source"].endswith("w10_lowest.xyz"))
    assert w10.info["file_energy"] == pytest.approx(-94.670654 * 0.0433641, rel=1e-5)  # kcal/mol -> eV


@pytest.mark.integration  # a geometry model trained for the session (tests/mpnn/conftest.py)
def test_overlapping_atoms_are_one_skip_line(geometry_run, tmp_path, capsys, caplog):
    """Two atoms 0.2 Angstrom apart in the second of three structures: a warning line naming
    the structure and why in the extended XYZ case, a CSV row with the reason otherwise, and
    the other two predicted."""
    frames = ase.io.read(MINIMA[0], index=":") * 3
    frames[1] = frames[1].copy()
    frames[1].positions[1] = frames[1].positions[0] + [0.2, 0.0, 0.0]
    source = tmp_path / "three.extxyz"
    ase.io.write(source, frames, format="extxyz")
    out = tmp_path / "out.extxyz"
    assert main(["--model", str(geometry_run), str(source), "-o", str(out), "--quiet"]) == 0
    assert "predicted 2, skipped 1" in capsys.readouterr().out
    skips = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert skips == [f"{source}: structure 1 skipped: atoms 0 and 1 are 0.200 Angstrom apart, closer than the floor "
                     "of 0.5 Angstrom"]
    assert [frame.info["index"] for frame in ase.io.read(out, index=":")] == [0, 2]
    csv_out = tmp_path / "out.csv"
    predict_files(load_trained(str(geometry_run)), [str(source)], str(csv_out), QUIET)
    rows = _rows(csv_out)
    assert [bool(row["predicted_energy"]) for row in rows] == [True, False, True]
    assert "closer than the floor of 0.5 Angstrom" in rows[1]["skipped"]


@pytest.mark.integration  # small models trained for the session (tests/mpnn/conftest.py)
def test_geometry_requests_a_model_cannot_serve_are_one_line_errors(distance_run, geometry_run, tutorial_subset,
                                                                    tmp_path, capsys):
    """Forces from a model that has none; positions from topology-only records."""
    assert main(["--model", str(distance_run), str(MINIMA[0]), "-o", str(tmp_path / "x.extxyz"), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "holds forces" in error and "write a .csv" in error
    assert main(["--model", str(geometry_run), str(tutorial_subset), "-o", str(tmp_path / "x.csv"), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "uses atom positions" in error and "topology-only" in error
