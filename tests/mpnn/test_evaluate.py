"""mpnn.evaluate's reports, the size-extrapolation report and the re-split by group."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpnn import extrapolation
from mpnn.data import Manifest
from mpnn.errors import InputError
from mpnn.evaluate import check_records_fit, split_metrics
from mpnn.predictions import Predictions
from tests.helpers import MINIMA


@pytest.fixture(scope="module")
def minima_test_set(tmp_path_factory):
    """The 28 shipped minima, all in the test split (as the demo prepares them)."""
    from mpnn.cli.prep_water import main as prep_main

    out = tmp_path_factory.mktemp("minima_test")
    assert prep_main([str(MINIMA[0].parent), "-o", str(out), "--fractions", "0", "0", "1", "--quiet"]) == 0
    return Manifest.load(str(out))


def _predictions(truth, pred, groups):
    ids = np.array([f"r{i}" for i in range(len(truth))])
    return Predictions(ids, np.asarray(groups), np.asarray(truth, float), np.asarray(pred, float))


def test_split_metrics_has_group_metrics_only_for_data_with_a_group():
    truth = np.arange(24.0)
    p = _predictions(truth, truth + 0.5, [9] * 12 + [10] * 12)
    grouped = split_metrics(p, "n_waters")
    assert grouped["group_summary"]["name"] == "n_waters"
    assert grouped["by_group"]["9"]["spearman"] == pytest.approx(1.0)
    assert grouped["group_summary"]["weighted"]["low_tail_bias"] == pytest.approx(0.5)
    json.dumps(grouped, allow_nan=False)
    plain = split_metrics(p, None)
    assert "by_group" not in plain and plain["mae"] == pytest.approx(0.5)


def test_hydrogen_bonds_of_the_small_minima_are_their_rings(minima_test_set):
    counts = extrapolation.hydrogen_bond_counts(minima_test_set, "test")
    by_size = dict(zip(counts.n_waters.tolist(), counts.n_hydrogen_bonds.tolist()))
    # The global minima of 3, 4 and 5 waters are cyclic: one hydrogen bond per water.
    assert (by_size[3], by_size[4], by_size[5]) == (3, 4, 5)
    assert len(counts.energy) == 28 and sorted(by_size) == list(range(3, 31))


def test_linear_baseline_recovers_exact_coefficients_and_reports_per_range():
    waters = np.array([3, 5, 8, 12, 20, 30])
    bonds = np.array([3, 6, 11, 20, 34, 52])
    energy = -10.0 * waters - 2.0 * bonds + 4.0
    counts = extrapolation.BondCounts(np.array([f"r{i}" for i in range(6)]), waters, bonds, energy)
    baseline = extrapolation.LinearBaseline.fit(counts)
    assert (baseline.per_water, baseline.per_hydrogen_bond, baseline.constant) == pytest.approx((-10, -2, 4))
    # A model off by 1 below 12 waters and by 3 from 12 on; records in another order.
    order = np.array([5, 0, 4, 1, 3, 2])
    error = np.where(waters[order] >= 12, 3.0, 1.0)
    predictions = Predictions(counts.record_id[order], waters[order], energy[order], energy[order] + error)
    report = extrapolation.range_metrics(predictions, counts, baseline, extrapolation.DEFAULT_RANGES)
    small, large = report["ranges"]
    assert (small["sizes"], small["count"], small["model_mae"]) == ("3-11", 3, pytest.approx(1.0))
    assert (large["sizes"], large["count"], large["model_mae"]) == ("12-30", 3, pytest.approx(3.0))
    assert small["baseline_mae"] == pytest.approx(0.0, abs=1e-9)


def test_parse_ranges_rejects_nonsense():
    assert extrapolation.parse_ranges(["3-11", "12"]) == [(3, 11), (12, 12)]
    for bad in ("a-b", "9-3"):
        with pytest.raises(ValueError, match="size range"):
            extrapolation.parse_ranges([bad])


def test_records_of_the_model_s_kind_and_vocabularies_fit_others_do_not(minima_test_set):
    manifest = minima_test_set
    check_records_fit("m", manifest.kind, manifest.vocab, manifest)
    check_records_fit("m", None, None, manifest)  # unknown: not checked
    with pytest.raises(InputError, match=r"manifest.json: water records; m was trained on pdbbind records$"):
        check_records_fit("m", "pdbbind", None, manifest)
    other = {"atom": ["H", "O"], "bond": manifest.vocab["bond"]}
    with pytest.raises(InputError, match=r"differ from those m was trained with, \{'atom': \['H', 'O'\]"):
        check_records_fit("m", manifest.kind, other, manifest)
    # A model file alone: only how many types its embeddings take is known.
    check_records_fit("m", None, None, manifest, {"atom": len(manifest.vocab["atom"])})
    with pytest.raises(InputError, match=r"manifest.json: 2 atom types \['O', 'H'\]; m takes 8 \(records of another"):
        check_records_fit("m", None, None, manifest, {"atom": 8})
