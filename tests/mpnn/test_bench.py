"""``mpnn-bench``: each sub-command runs on tiny inputs and writes a complete JSON report.

These tests check the reports, never the speed (that is the benchmark's job).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mpnn import host
from mpnn.bench.__main__ import main
from mpnn.bench.loader import SETTING_NAMES
from mpnn.bench.train import message_steps
from mpnn.graph_format.manifest import Manifest
from tests.helpers import MINIMA, PDBBIND, REPO, load_benchmark_script


@pytest.fixture(scope="module")
def prepared_minima(tmp_path_factory) -> Path:
    """The 28 shipped minima prepared by mpnn-prep-water with its defaults (22 training
    graphs; several shards per split, which the loader settings interleave)."""
    from mpnn.cli.prep_water import main as prep_main

    out = tmp_path_factory.mktemp("minima")
    assert prep_main([str(MINIMA[0].parent), "-o", str(out), "--quiet"]) == 0
    return out


# Peak RSS of a Python process with NumPy (and TensorFlow in the training benchmark), in
# KiB: a value outside these bounds is in the wrong unit (bytes, MiB) or not a peak RSS.
PEAK_RSS_KIB = (20 * 1024, 8 * 1024**2)
WITH_TENSORFLOW_KIB = 100 * 1024


def check_environment(report: dict) -> None:
    assert 1 <= report["machine"]["cores"] <= os.cpu_count()
    assert report["machine"]["cpu"]
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    assert report["machine"]["memory_gib"] == pytest.approx(memory_gib, rel=0.01)
    assert report["versions"]["tensorflow"] and report["versions"]["python"]
    assert report["date"].endswith("+00:00")  # UTC
    assert isinstance(report["command"], list)


def test_loader_reports_every_setting_and_batch_size(prepared_minima, tmp_path, capsys):
    output = tmp_path / "loader.json"
    argv = ["loader", "--data", str(prepared_minima / "manifest.json"), "--batch-sizes", "4", "8",
            "--repeats", "1", "--warmup-batches", "1", "--output", str(output)]
    peak_before = host.peak_rss_kib()  # what the benchmark reports (VmHWM, not ru_maxrss)
    assert main(argv) == 0
    peak_after = host.peak_rss_kib()

    report = json.loads(output.read_text())
    check_environment(report)
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

    table = capsys.readouterr().out
    for name in SETTING_NAMES:
        assert name in table


@pytest.mark.integration  # a spawned converter worker
def test_prep_reports_rate_and_speedup(tmp_path, capsys):
    output = tmp_path / "prep.json"
    argv = ["prep", "--inputs", *map(str, MINIMA[:3]), "--workers", "1", "2", "--output", str(output)]
    assert main(argv) == 0

    report = json.loads(output.read_text())
    check_environment(report)
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
    assert "records/s" in capsys.readouterr().out


@pytest.mark.integration  # mpirun
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")
def test_prep_over_mpi_ranks_reports_every_rank(tmp_path):
    output = tmp_path / "prep-mpi.json"
    argv = ["prep", "--inputs", *map(str, MINIMA[:4]), "--workers", "1", "2", "--mpi", "--output", str(output)]
    assert main(argv) == 0

    report = json.loads(output.read_text())
    assert report["parameters"]["mpi"] is True
    one, two = report["results"]
    assert one["records"] == two["records"] == 4
    # With one rank nothing runs beside rank 0; with two, the other rank converts half.
    assert one["workers_cpu_seconds"] == 0 and one["peak_rss_worker_kib"] is None
    assert two["workers_cpu_seconds"] > 0 and two["peak_rss_worker_kib"] > 0


def test_missing_manifest_fails_with_a_message(tmp_path, caplog):
    missing = tmp_path / "nothing" / "manifest.json"
    assert main(["loader", "--data", str(missing), "--output", str(tmp_path / "out.json")]) == 1
    assert str(missing) in caplog.text
    assert not (tmp_path / "out.json").exists()


def test_rejects_non_positive_batch_size(tmp_path):
    with pytest.raises(SystemExit):
        main(["loader", "--data", str(tmp_path), "--batch-sizes", "0"])


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
def test_prep_pdbbind_reports_complexes_per_second(pdbbind_tree, tmp_path, capsys):
    output = tmp_path / "prep-pdbbind.json"
    index = pdbbind_tree / "index" / "INDEX_general_PL_data.2020"
    argv = ["prep", "--converter", "pdbbind", "--inputs", str(pdbbind_tree), "--index", str(index),
            "--workers", "1", "2", "--prep-args", "--cutoff 4.5", "--output", str(output)]
    assert main(argv) == 0

    report = json.loads(output.read_text())
    check_environment(report)
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
    assert "complexes/s" in capsys.readouterr().out


def test_prep_pdbbind_needs_an_index(pdbbind_tree, tmp_path, caplog):
    argv = ["prep", "--converter", "pdbbind", "--inputs", str(pdbbind_tree), "--output", str(tmp_path / "out.json")]
    assert main(argv) == 1
    assert "--index" in caplog.text
    assert not (tmp_path / "out.json").exists()


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


@pytest.mark.integration  # mpnn-bench in its own process
def test_train_reports_graphs_per_second(prepared_minima, tmp_path):
    # A subprocess: thread settings cannot change once TensorFlow runs in this process.
    import subprocess
    import sys

    from mpnn import models
    from mpnn.data import Manifest

    data = prepared_minima
    output = tmp_path / "train.json"
    argv = [sys.executable, "-m", "mpnn.bench", "train", "--data", str(data), "--widths", "8", "--batch-sizes", "4",
            "--message-steps", "2", "--steps", "3", "--warmup-steps", "1", "--intra-op", "1", "--inter-op", "1", "--output", str(output),
            "--repeats", "2", "--variants", "batch_cut=2", "default"]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr

    report = json.loads(output.read_text())
    check_environment(report)
    assert report["benchmark"] == "train" and report["model"] == "mpnn"
    assert report["parameters"]["intra_op_threads"] == 1 and report["parameters"]["inter_op_threads"] == 1
    assert report["parameters"]["batch_cut"] == 1  # one inter-op thread: batches are not cut
    assert report["parameters"]["repeats"] == 2
    reference, default = report["results"]
    assert (reference["variant"], default["variant"]) == ("batch_cut=2", "default")
    assert report["parameters"]["message_steps"] == 2
    manifest = Manifest.load(str(data))
    options = {"width": 8, "message_steps": report["parameters"]["message_steps"]}
    width_8 = models.build_from_manifest("mpnn", models.model_config("mpnn", options), manifest)
    for result in (reference, default):
        assert (result["width"], result["batch_size"]) == (8, 4)
        # The same model, trained with and without the cut: the parameters of an MPNN of width 8.
        assert result["parameters"] == width_8.count_params()
        [rank] = result["per_rank"]
        assert rank["rank"] == 0 and rank["steps"] == 3
        # Each timed run takes 3 batches of at most 4 graphs; the rates are those of the
        # median repeat (of two: the faster).
        assert 3 <= rank["graphs"] <= 3 * 4
        assert rank["graphs_per_second"] == pytest.approx(rank["graphs"] / rank["seconds"])
        assert rank["steps_per_second"] == pytest.approx(3 / rank["seconds"])
        assert rank["graphs_per_second"] == pytest.approx(max(rank["repeats_graphs_per_second"]))
        assert result["graphs_per_second"] == pytest.approx(rank["graphs_per_second"])  # one rank: the sum
        # CPU time per wall second of one process with one intra-op and one inter-op thread
        # (and the loader's): between none and every core of the machine.
        assert 0 < result["cpu_seconds_per_step"] * result["steps_per_second"] <= os.cpu_count()
        assert WITH_TENSORFLOW_KIB < result["peak_rss_kib"] < PEAK_RSS_KIB[1]
    assert "graphs/s" in completed.stdout and "vs first" in completed.stdout


@pytest.mark.integration  # a subprocess training a geometry model (about 20 s)
def test_train_runs_the_geometry_model_and_counts_atoms(prepared_minima, tmp_path):
    import subprocess
    import sys

    output = tmp_path / "train.json"
    argv = [sys.executable, "-m", "mpnn.bench", "train", "--data", str(prepared_minima), "--model", "schnet",
            "--widths", "8", "--batch-sizes", "4", "--message-steps", "1", "--steps", "3", "--warmup-steps", "1",
            "--output", str(output)]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(output.read_text())
    [result] = report["results"]
    [rank] = result["per_rank"]
    assert report["model"] == "schnet"
    # Minima of 3 to 30 waters: 9 to 90 atoms per graph, so the atoms are counted per graph.
    assert 9 * rank["graphs"] <= rank["atoms"] <= 90 * rank["graphs"]
    assert rank["atoms_per_second"] == pytest.approx(rank["atoms"] / rank["seconds"])
    assert "atoms/s" in completed.stdout


def test_train_message_steps_default_to_the_models():
    from mpnn import models

    assert message_steps("mpnn", argparse.Namespace(message_steps=None)) == models.model_config("mpnn", {}).message_steps
    assert message_steps("mpnn", argparse.Namespace(message_steps=3)) == 3
    assert message_steps("gat-lspe", argparse.Namespace(message_steps=None)) is None


def test_train_rejects_an_unknown_model_option(prepared_minima, tmp_path, caplog):
    argv = ["train", "--data", str(prepared_minima), "--widths", "8", "--batch-sizes", "4", "--steps", "1",
            "--variants", "no_such_option=1", "--output", str(tmp_path / "train.json")]
    assert main(argv) == 1
    assert "no_such_option" in caplog.text and not (tmp_path / "train.json").exists()


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ({"benchmark": "loader"}, "not an mpnn-bench train report"),
        ({"benchmark": "train", "parameters": {"ranks": 2}, "results": []}, "a run of 2 ranks, not 1"),
        ({"benchmark": "train", "parameters": {"ranks": 1},
          "results": [{"variant": "default", "width": 8, "batch_size": 4, "graphs_per_second": 100.0}]},
         "no result for variant 'default', width 8, batch 8"),
    ],
    ids=["other-benchmark", "two-ranks", "missing-batch"],
)
def test_train_baseline_must_be_a_one_rank_run_of_the_same_sweep(baseline, message, tmp_path, caplog):
    path = tmp_path / "one-rank.json"
    path.write_text(json.dumps(baseline))
    argv = ["train", "--data", str(tmp_path / "never-read"), "--widths", "8", "--batch-sizes", "4", "8",
            "--baseline", str(path), "--output", str(tmp_path / "train.json")]
    assert main(argv) == 1
    assert message in caplog.text and str(path) in caplog.text


def test_prep_keeps_the_last_runs_data_set(tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "stale.txt").write_text("replaced")
    argv = ["prep", "--inputs", *map(str, MINIMA[:3]), "--workers", "1", "--keep-output", str(kept),
            "--output", str(tmp_path / "prep.json")]
    assert main(argv) == 0
    assert sorted(p.name for p in kept.iterdir() if p.suffix != ".gz") == ["manifest.json"]
    manifest = Manifest.load(str(kept))
    assert sum(manifest.split_records(split) for split in ("train", "valid", "test")) == 3
