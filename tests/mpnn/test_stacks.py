"""The two stacks side by side (scripts/setup.sh: .venv = TensorFlow 2.15 + Horovod,
.venv-current = TensorFlow 2.21 + tf-keras): two tf.distribute workers train as two Horovod
ranks do, and a run of the other stack resumes here and its model loads (or says why not).

Each test needs the other stack's venv beside this one (scripts/test.sh builds both) and is
skipped without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpnn import engines
from tests.helpers import REPO, read_log, run_checked

HERE_IS_HOROVOD = engines.horovod_installed()
OTHER_VENV = REPO / (".venv-current" if HERE_IS_HOROVOD else ".venv")
HOROVOD_VENV = Path(sys.prefix) if HERE_IS_HOROVOD else REPO / ".venv"
SEEDED = ["--batch-strategy", "gbs", "--epochs", "3", "--batch-size", "32", "--width", "16", "--message-steps", "2",
          "--verbose", "0", "--seed", "3"]
# Relative tolerance of losses and test MAE between the engines. Both average the same
# gradients of the same batches from the same initial weights; they differ only in the
# order of float32 sums (Gloo's or MPI's average against tf.distribute's ring all-reduce,
# TensorFlow 2.15's kernels against 2.21's), about 1e-7 relative per step. Over the ~150
# Adam steps of this run they agree to 7 digits (measured); another seed, or another order of
# the batches (what the loader's interleave gives with several files per rank: hence one
# shard per rank here), moves the loss by about 1e-3, so 1e-5 separates "same run" from
# "different run" by two orders.
TOLERANCE = 1e-5

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def one_shard_per_rank(tutorial_subset, tmp_path_factory) -> Path:
    """`tutorial_subset` in 2 shards per split: with 2 ranks each reads one file, in order.
    (With more files per rank the loader interleaves them in no fixed order, and a seeded
    2-rank run varies from run to run by about 1e-3 in its losses, on either engine.)"""
    from mpnn.cli.prep_water import main

    out = tmp_path_factory.mktemp("two_shards")
    assert main([str(tutorial_subset), "-o", str(out), "--shards", "2", "--quiet"]) == 0
    return out


def _python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def _clean_env() -> dict[str, str]:
    """This environment without what `mpnn` set for this stack's TensorFlow (TF_USE_LEGACY_KERAS,
    which TensorFlow 2.15 without tf-keras refuses)."""
    return {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.skipif(not (HOROVOD_VENV / "bin" / "horovodrun").exists(), reason="no Horovod stack (.venv) here")
def test_two_tf_distribute_workers_train_as_two_horovod_ranks(one_shard_per_rank, tmp_path):
    train = ["-m", "mpnn.cli.train", "--data", str(one_shard_per_rank), *SEEDED]
    mwms, horovod = tmp_path / "tf-distribute", tmp_path / "horovod"
    run_checked([sys.executable, "-m", "mpnn.cli.launch", "-np", "2", sys.executable, *train, "--run-dir", str(mwms),
                 "--engine", "tf-distribute"])
    run_checked([str(HOROVOD_VENV / "bin" / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
                 _python(HOROVOD_VENV), *train, "--run-dir", str(horovod), "--engine", "horovod"], cwd=REPO, env=_clean_env())
    ours, reference = _metrics(mwms), _metrics(horovod)
    assert ours["engine"]["name"] == "tf-distribute" and reference["engine"]["name"] == "horovod"
    assert json.loads((mwms / "config.json").read_text())["engine_as_run"]["name"] == "tf-distribute"
    assert ours["ranks"] == 2 and ours["batch_per_rank"] == 16 and ours["weights_identical_across_ranks"]
    assert [float(r["loss"]) for r in read_log(mwms)] == pytest.approx(
        [float(r["loss"]) for r in read_log(horovod)], rel=TOLERANCE)
    assert [float(r["lr"]) for r in read_log(mwms)] == pytest.approx([float(r["lr"]) for r in read_log(horovod)])
    assert ours["test"]["count"] == reference["test"]["count"]
    assert ours["test"]["mae"] == pytest.approx(reference["test"]["mae"], rel=TOLERANCE)


@pytest.mark.skipif(not (OTHER_VENV / "bin" / "python").exists(), reason=f"no {OTHER_VENV.name} here")
def test_a_run_of_the_other_stack_resumes_here_and_its_model_loads_or_says_why(water_dataset, tmp_path):
    run_dir = tmp_path / "run"
    small = ["--data", str(water_dataset), "--run-dir", str(run_dir), "--batch-size", "64", "--width", "8",
             "--message-steps", "1", "--verbose", "0"]
    run_checked([_python(OTHER_VENV), "-m", "mpnn.cli.train", *small, "--epochs", "1"], cwd=REPO, env=_clean_env())
    other = _metrics(run_dir)["engine"]
    run_checked([sys.executable, "-m", "mpnn.cli.train", *small, "--epochs", "2", "--resume"])
    resumed = _metrics(run_dir)
    assert resumed["resumed_from_epoch"] == [1] and resumed["epochs_run"] == 2
    assert resumed["engine"]["tensorflow"] != other["tensorflow"]
    assert len(read_log(run_dir)) == 2

    # model.keras of the other stack (rewritten by the resumed run: make one there again).
    model = tmp_path / "other-model" / "model.keras"
    run_checked([_python(OTHER_VENV), "-m", "mpnn.cli.train", *small[:2], "--run-dir", str(model.parent), *small[4:],
                 "--epochs", "1"], cwd=REPO, env=_clean_env())
    done = subprocess.run([sys.executable, "-m", "mpnn.cli.evaluate", "--model", str(model), "--data", str(water_dataset)],
                          capture_output=True, text=True, timeout=600)
    if HERE_IS_HOROVOD:  # a tf-keras 2.21 model on Keras 2.15: refused in one line
        assert done.returncode == 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("mpnn-evaluate:")]
        assert errors == [f"mpnn-evaluate: error: {model}: saved by Keras 2.21.0, this environment has Keras 2.15.0: "
                          "a model.keras of the current stack (TensorFlow 2.21, tf-keras) loads there only; use that "
                          "stack's .venv-current (scripts/setup.sh, MPNN_STACK=current)"]
    else:  # a Keras 2.15 model on tf-keras 2.21: loads and gives the run's test MAE
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"MAE {_metrics(model.parent)['test']['mae']:.4f}" in done.stdout
