"""``mpnn-bench``: flags become each benchmark's options; misuse and unusable inputs end in
one line on stderr (exit 2 for a flag's value, 1 for an input); the training benchmark runs
as a command in its own process."""

from __future__ import annotations

import json
import os

import pytest

from mpnn.bench import train
from mpnn.bench.train import TrainBenchOptions
from mpnn.cli.bench import main
from mpnn.errors import UsageError
from tests.helpers import PDBBIND, PEAK_RSS_KIB, REPO, WITH_TENSORFLOW_KIB, check_bench_environment


def test_missing_manifest_fails_with_a_message(tmp_path, capsys):
    missing = tmp_path / "nothing" / "manifest.json"
    assert main(["loader", "--data", str(missing), "--output", str(tmp_path / "out.json")]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_rejects_non_positive_batch_size(tmp_path, capsys):
    assert main(["loader", "--data", str(tmp_path), "--batch-sizes", "8", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "mpnn-bench: error: argument --batch-sizes: must be one or more whole numbers >= 1, got 8 0"
    ]
    with pytest.raises(UsageError, match=r"^argument --warmup-steps: must be a whole number >= 0, got -1$"):
        TrainBenchOptions(data="d", warmup_steps=-1)  # the library checks the same declarations


def test_prep_pdbbind_needs_an_index(tmp_path, capsys):
    argv = ["prep", "--converter", "pdbbind", "--inputs", str(PDBBIND), "--output", str(tmp_path / "out.json")]
    assert main(argv) == 1
    assert "--index" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.integration  # mpnn-bench in its own process
def test_train_reports_graphs_per_second(prepared_minima, tmp_path):
    # A subprocess: thread settings cannot change once TensorFlow runs in this process.
    import subprocess
    import sys

    from mpnn import models
    from mpnn.data import Manifest

    data = prepared_minima
    output = tmp_path / "train.json"
    argv = [sys.executable, "-m", "mpnn.cli.bench", "train", "--data", str(data), "--widths", "8", "--batch-sizes", "4",
            "--message-steps", "2", "--steps", "3", "--warmup-steps", "1", "--intra-op", "1", "--inter-op", "1", "--output", str(output),
            "--repeats", "2", "--variants", "batch_cut=2", "default"]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr

    report = json.loads(output.read_text())
    check_bench_environment(report)
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
    argv = [sys.executable, "-m", "mpnn.cli.bench", "train", "--data", str(prepared_minima), "--family", "schnet",
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



def test_train_rejects_an_unknown_model_option(prepared_minima, tmp_path, capsys):
    argv = ["train", "--data", str(prepared_minima), "--widths", "8", "--batch-sizes", "4", "--steps", "1",
            "--variants", "no_such_option=1", "--output", str(tmp_path / "train.json")]
    assert main(argv) == 1
    assert "no_such_option" in capsys.readouterr().err and not (tmp_path / "train.json").exists()


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
def test_train_baseline_must_be_a_one_rank_run_of_the_same_sweep(baseline, message, tmp_path, capsys):
    path = tmp_path / "one-rank.json"
    path.write_text(json.dumps(baseline))
    argv = ["train", "--data", str(tmp_path / "never-read"), "--widths", "8", "--batch-sizes", "4", "8",
            "--baseline", str(path), "--output", str(tmp_path / "train.json")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and str(path) in err



@pytest.fixture
def train_options(monkeypatch) -> list[TrainBenchOptions]:
    """The options `mpnn.bench.train.run` is called with, in place of a run (it returns what
    a rank other than 0 returns: no report)."""
    called: list[TrainBenchOptions] = []
    monkeypatch.setattr(train, "run", lambda options: called.append(options))
    return called


def test_train_family_flag_names_the_model_family(train_options, capsys):
    assert main(["train", "--data", "DATA", "--family", "schnet", "--widths", "8"]) == 0
    [options] = train_options
    assert options == TrainBenchOptions(data="DATA", family="schnet", widths=(8,))
    assert "warning" not in capsys.readouterr().err


def test_train_model_flag_still_names_the_family_with_a_deprecation_line(train_options, capsys):
    assert main(["train", "--data", "DATA", "--model", "schnet"]) == 0
    [options] = train_options
    assert options.family == "schnet"
    assert capsys.readouterr().err.splitlines() == [
        "mpnn-bench: warning: --model is deprecated for the model family, use --family (it will be removed in "
        "the next release)"
    ]


def test_train_family_defaults_to_the_manifests(train_options):
    assert main(["train", "--data", "DATA"]) == 0
    assert train_options == [TrainBenchOptions(data="DATA")]
