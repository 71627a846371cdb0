"""`mpnn.bench`: each benchmark runs on tiny inputs and makes a complete JSON report.

These tests check the reports, never the speed (that is the benchmark's job).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from mpnn import host
from mpnn.bench import loader, prep
from mpnn.bench.common import BenchError, make_report, write_report
from mpnn.bench.loader import SETTING_NAMES, LoaderBenchOptions
from mpnn.bench.prep import PrepBenchOptions
from mpnn.bench.train import message_steps
from mpnn.graph_format.manifest import Manifest
from tests.helpers import MINIMA, PDBBIND, PEAK_RSS_KIB, check_bench_environment, load_benchmark_script


def written(report: dict, path: Path) -> dict:
    """`report` as the command writes it and a reader loads it (JSON)."""
    write_report(str(path), report)
    return json.loads(path.read_text())


def test_loader_reports_every_setting_and_batch_size(prepared_minima, tmp_path):
    options = LoaderBenchOptions(data=str(prepared_minima / "manifest.json"), batch_sizes=(4, 8), repeats=1,
                                 warmup_batches=1)
    peak_before = host.peak_rss_kib()  # what the benchmark reports (VmHWM, not ru_maxrss)
    results = loader.run(options)
    peak_after = host.peak_rss_kib()

    report = written(make_report("loader", results), tmp_path / "loader.json")
    check_bench_environment(report)
    assert report["benchmark"] == "loader"
    manifest = json.loads((prepared_minima / "manifest.json").read_text())
    assert report["data"]["compression"] == manifest["compression"]
    assert report["data"]["records"] == manifest["splits"]["train"]["records"]
    assert set(report["settings"]) == set(SETTING_NAMES)
    measured = {(r["setting"], r["batch_size"]): r for r in report["results"]}
    assert set(measured) == {(s, b) for s in SETTING_NAMES for b in (4, 8)}
    for (_, batch_size), result in measured.items():
        # One timed pass sees every training graph exactly once, in ceil(records / batch) batches.
        assert result["graphs_per_pass"] == report["data"]["records"]
        assert result["batches_per_pass"] == math.ceil(report["data"]["records"] / batch_size)
        # The rates are those of the timed pass (one repeat).
        [seconds] = result["seconds"]
        assert result["graphs_per_second"] == pytest.approx(result["graphs_per_pass"] / seconds)
        assert result["batches_per_second"] == pytest.approx(result["batches_per_pass"] / seconds)
        # This process's peak RSS (KiB) while the sweep ran. The kernel syncs threads' RSS
        # counters lazily, so readings may go back by a few pages: 1 MiB of slack.
        assert peak_before - 1024 <= result["peak_rss_kib"] <= peak_after + 1024
    # The peak so far never falls (within that slack), and is reported in the order measured.
    peaks = [r["peak_rss_kib"] for r in report["results"]]
    assert all(later >= earlier - 1024 for earlier, later in zip(peaks, peaks[1:]))

    table = loader.format_report(report)
    for name in SETTING_NAMES:
        assert name in table



@pytest.mark.integration  # a spawned converter worker
def test_prep_reports_rate_and_speedup(tmp_path):
    options = PrepBenchOptions(inputs=tuple(map(str, MINIMA[:3])), workers=(1, 2))
    report = written(make_report("prep", prep.run(options)), tmp_path / "prep.json")
    check_bench_environment(report)
    assert [r["workers"] for r in report["results"]] == [1, 2]
    base = report["results"][0]
    assert report["parameters"]["speedup_baseline_workers"] == 1
    for result in report["results"]:
        assert result["records"] == 3 and result["skipped"] == 0
        [seconds] = result["seconds"]  # one repeat
        assert result["records_per_second"] == pytest.approx(3 / seconds)
        assert result["speedup"] == pytest.approx(result["records_per_second"] / base["records_per_second"])
        assert 0 <= result["serial_seconds"] <= seconds
        assert len(result["load_average"]) == 1
        # The parent's peak RSS and CPU time hold its own conversion part's.
        [parts] = result["parts"]
        assert result["peak_rss_kib"] == parts[0]["peak_rss_kib"]
        assert PEAK_RSS_KIB[0] < result["peak_rss_kib"] < PEAK_RSS_KIB[1]
        assert result["parent_cpu_seconds"] >= parts[0]["cpu_seconds"]
    # The spawned worker's CPU time is counted in the children's.
    two = report["results"][1]
    assert two["workers_cpu_seconds"] >= two["parts"][0][1]["cpu_seconds"]
    assert two["peak_rss_worker_kib"] == two["parts"][0][1]["peak_rss_kib"]
    # Every conversion process reports its own CPU time and peak memory.
    assert [[p["part"] for p in r["parts"][0]] for r in report["results"]] == [[0], [0, 1]]
    assert report["results"][0]["peak_rss_worker_kib"] is None
    # One process converts in-process; with two, the pool's workers do the converting.
    assert report["results"][0]["workers_cpu_seconds"] < report["results"][1]["workers_cpu_seconds"]
    assert "records/s" in prep.format_report(report)


@pytest.mark.integration  # mpirun
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")
def test_prep_over_mpi_ranks_reports_every_rank(tmp_path):
    options = PrepBenchOptions(inputs=tuple(map(str, MINIMA[:4])), workers=(1, 2), mpi=True)
    report = written(make_report("prep", prep.run(options)), tmp_path / "prep-mpi.json")
    assert report["parameters"]["mpi"] is True
    one, two = report["results"]
    assert one["records"] == two["records"] == 4
    # With one rank nothing runs beside rank 0; with two, the other rank converts half.
    assert one["workers_cpu_seconds"] == 0 and one["peak_rss_worker_kib"] is None
    assert two["workers_cpu_seconds"] > 0 and two["peak_rss_worker_kib"] > 0



# ---- mpnn-bench prep --converter pdbbind, on a tree made by benchmarks/make_pdbbind_tree.py

JITTER = 0.05  # Angstrom per coordinate, the script's default


@pytest.fixture(scope="module")
def make_pdbbind_tree():
    return load_benchmark_script("make_pdbbind_tree")


@pytest.fixture(scope="module")
def pdbbind_tree(make_pdbbind_tree, tmp_path_factory) -> Path:
    """12 moved copies of the six sample complexes (two each), with their index file."""
    root = tmp_path_factory.mktemp("pdbbind_tree") / "tree"
    argv = ["--source", str(PDBBIND), "--count", "12", "-o", str(root), "--jitter", str(JITTER), "--seed", "3"]
    assert make_pdbbind_tree.main(argv) == 0
    return root


def pdb_coordinates(path: Path) -> tuple[np.ndarray, list[str]]:
    """ATOM/HETATM positions ``[n, 3]`` (Angstrom) of a PDB file, and every line without them."""
    lines = path.read_text().splitlines()
    atoms = [line for line in lines if line.startswith(("ATOM  ", "HETATM"))]
    xyz = np.array([[float(line[c:c + 8]) for c in (30, 38, 46)] for line in atoms])
    return xyz, [line[:30] + line[54:] for line in lines]


@pytest.mark.integration  # a spawned converter worker
def test_prep_pdbbind_reports_complexes_per_second(pdbbind_tree, tmp_path):
    index = pdbbind_tree / "index" / "INDEX_general_PL_data.2020"
    options = PrepBenchOptions(inputs=(str(pdbbind_tree),), converter="pdbbind", index=(str(index),), workers=(1, 2),
                               prep_args=("--cutoff", "4.5"))
    report = written(make_report("prep", prep.run(options)), tmp_path / "prep-pdbbind.json")
    check_bench_environment(report)
    assert report["converter"] == "pdbbind"
    assert report["parameters"]["index"] == [str(index)]
    assert report["parameters"]["prep_args"] == ["--cutoff", "4.5"]
    assert [r["workers"] for r in report["results"]] == [1, 2]
    base = report["results"][0]
    for result in report["results"]:
        # Skipped: the tree's index/ and copies.tsv, listed as entries that are not complexes.
        assert result["records"] == 12 and result["skipped"] == 2
        assert result["records_per_second"] == pytest.approx(12 / result["seconds"][0])
        assert result["speedup"] == pytest.approx(result["records_per_second"] / base["records_per_second"])
    assert "complexes/s" in prep.format_report(report)



@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"converter": "pdbbind"}, "--converter pdbbind needs --index"),
        ({"index": ("INDEX",)}, "--index applies to --converter pdbbind only, not water"),
        ({"prep_args": ("--workers", "2")}, r"--prep-args may not set \['--workers'\]"),
        ({"prep_args": ("-o=elsewhere",)}, r"--prep-args may not set \['-o'\]"),
    ],
    ids=["pdbbind-without-index", "index-for-water", "workers", "output"],
)
def test_prep_options_reject_what_the_benchmark_cannot_run(values, message):
    with pytest.raises(BenchError, match=message):
        PrepBenchOptions(inputs=("somewhere",), **values)


def test_made_tree_converts_and_moves_each_complex_rigidly(pdbbind_tree, tmp_path):
    from rdkit import Chem
    from scipy.spatial.distance import cdist, pdist

    from mpnn.cli.prep_pdbbind import main as prep_main
    from data_prep.pdbbind_index import read_index

    entries, errors = read_index(str(pdbbind_tree / "index" / "INDEX_general_PL_data.2020"))
    codes = sorted(p.name for p in pdbbind_tree.iterdir() if p.name != "index" and p.is_dir())
    assert not errors and sorted(e.code for e in entries) == codes and len(set(codes)) == 12
    out = tmp_path / "converted"
    argv = [str(pdbbind_tree), "--index", str(pdbbind_tree / "index" / "INDEX_general_PL_data.2020"), "-o", str(out)]
    assert prep_main([*argv, "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["summary"]["converted"] == 12

    sources = dict(line.split("\t") for line in (pdbbind_tree / "copies.tsv").read_text().splitlines()[1:])
    source_affinity = {e.code: e.affinity for e in read_index(str(PDBBIND / "index" / "INDEX_general_PL_data.2016"))[0]}
    for entry in entries:
        before, after = PDBBIND / sources[entry.code], pdbbind_tree / entry.code
        assert entry.affinity == source_affinity[before.name]
        ligand, moved_ligand = (
            Chem.MolFromMolFile(str(d / f"{d.name}_ligand.sdf"), removeHs=False, sanitize=False).GetConformer()
            .GetPositions() for d in (before, after)
        )
        pocket, text = pdb_coordinates(before / f"{before.name}_pocket.pdb")
        moved_pocket, moved_text = pdb_coordinates(after / f"{after.name}_pocket.pdb")
        assert moved_text == text  # residue and atom names, other records: all but the coordinates
        assert np.sqrt(np.mean((moved_ligand - ligand) ** 2)) > 1.0  # it did move
        # Distances within the ligand and between ligand and pocket change by the jitter only
        # (each by about sqrt(2) * JITTER): one rigid motion for the whole complex.
        pairs = [(pdist(ligand), pdist(moved_ligand)), (cdist(ligand, pocket), cdist(moved_ligand, moved_pocket))]
        for original, moved in pairs:
            change = np.abs(moved - original)
            assert np.sqrt(np.mean(change**2)) < 2 * JITTER and change.max() < 10 * JITTER


def test_made_tree_is_determined_by_its_seed(make_pdbbind_tree, tmp_path):
    def tree(name: str, seed: int) -> dict[str, str]:
        assert make_pdbbind_tree.main(["--source", str(PDBBIND), "--count", "3", "-o", str(tmp_path / name),
                                       "--seed", str(seed)]) == 0
        return {str(p.relative_to(tmp_path / name)): p.read_text() for p in (tmp_path / name).rglob("*") if p.is_file()}

    assert tree("a", 7) == tree("b", 7) != tree("c", 8)

def test_train_message_steps_default_to_the_models():
    from mpnn import models

    assert message_steps("mpnn", None) == models.model_config("mpnn", {}).message_steps
    assert message_steps("mpnn", 3) == 3
    assert message_steps("gat-lspe", None) is None


def test_prep_keeps_the_last_runs_data_set(tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "stale.txt").write_text("replaced")
    prep.run(PrepBenchOptions(inputs=tuple(map(str, MINIMA[:3])), workers=(1,), keep_output=str(kept)))
    assert sorted(p.name for p in kept.iterdir() if p.suffix != ".gz") == ["manifest.json"]
    manifest = Manifest.load(str(kept))
    assert sum(manifest.split_records(split) for split in ("train", "valid", "test")) == 3
