"""Misuse of mpnn-train and mpnn-evaluate, and broken inputs: each case gets exactly its
exit status and one line on stderr naming the flag or the file, never a traceback."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpnn import checkpoint, distributed
from mpnn.cli import evaluate, train
from mpnn.cli.runner import run
from mpnn.errors import UsageError
from mpnn.atomic import WriteError
from mpnn.divergence import TrainingDiverged
from mpnn.run_lock import RunLockedError
from tests.helpers import HOROVODRUN_TWO_RANKS

TINY = ["--epochs", "1", "--batch-size", "64", "--width", "8", "--message-steps", "1", "--verbose", "0"]
SHARD = "train-00000-of-00004.tfrecord.gz"
TEST_SHARD = "test-00000-of-00004.tfrecord.gz"


@pytest.fixture(autouse=True, scope="module")
def one_rank():
    from mpnn import distributed

    distributed.init()


@pytest.fixture
def data(water_dataset, tmp_path) -> Path:
    """A copy of the prepared water data set, to damage."""
    return Path(shutil.copytree(water_dataset, tmp_path / "data"))


@pytest.fixture(scope="module")
def model_file(water_dataset, tmp_path_factory) -> Path:
    """An untrained model for `water_dataset`, saved as mpnn-train saves it."""
    from mpnn import models
    from mpnn.data import Manifest

    manifest = Manifest.load(str(water_dataset))
    name = models.choose_model("auto", manifest)
    architecture = models.model_config(name, {"width": 8, "message_steps": 1})
    model = models.build_from_manifest(name, architecture, manifest)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    models.save_for_inference(model, str(path))
    return path


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0][len(f"{prog}: error: "):]


# Flag misuse of mpnn-train: (extra flags, the message). Exit status 2, before any work.
TRAIN_MISUSE = {
    "zero epochs": (["--epochs", "0"], "argument --epochs: must be a whole number >= 1, got 0"),
    "negative epochs": (["--epochs", "-3"], "argument --epochs: must be a whole number >= 1, got -3"),
    "zero batch": (["--batch-size", "0"], "argument --batch-size: must be a whole number >= 1, got 0"),
    "zero learning rate": (["--learning-rate", "0"], "argument --learning-rate: must be a number > 0, got 0.0"),
    "negative learning rate": (
        ["--learning-rate=-0.001"], "argument --learning-rate: must be a number > 0, got -0.001"
    ),
    "dropout of 1.5": (["--dropout", "1.5"], "argument --dropout: must be a number in [0, 1), got 1.5"),
    "verbose 5": (["--verbose", "5"], "argument --verbose: must be 0, 1 or 2, got 5"),
    "zero parallel calls": (
        ["--parallel-calls", "0"], "argument --parallel-calls: must be -1 (AUTOTUNE) or a whole number >= 1, got 0"
    ),
    "negative warm-up": (["--warmup-epochs", "-1"], "argument --warmup-epochs: must be a whole number >= 0, got -1"),
    "zero message steps": (["--message-steps", "0"], "argument --message-steps: must be a whole number >= 1, got 0"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_MISUSE))
def test_train_flag_misuse_is_exit_2_naming_the_flag(case, tmp_path, capsys):
    flags, message = TRAIN_MISUSE[case]
    argv = ["--data", str(tmp_path), "--run-dir", str(tmp_path / "run"), *TINY, *flags]
    assert train.main(argv) == 2
    assert _one_error_line(capsys, "mpnn-train") == message
    assert not (tmp_path / "run").exists()


def test_a_config_file_value_out_of_range_is_exit_2(tmp_path, capsys):
    (tmp_path / "settings.yaml").write_text("epochs: 0\n")
    assert train.main(["--data", str(tmp_path), "--config", str(tmp_path / "settings.yaml")]) == 2
    assert "epochs" in _one_error_line(capsys, "mpnn-train")


def test_a_global_batch_that_does_not_split_across_ranks_is_exit_2_naming_the_flag():
    with pytest.raises(UsageError) as error:
        distributed.check_batch_split(3, "gbs", 2)
    assert str(error.value) == (
        "argument --batch-size: with --batch-strategy gbs on 2 ranks it must be a multiple of 2 (2, 4, 6, ...), got 3"
    )
    distributed.check_batch_split(3, "dbs", 2)
    distributed.check_batch_split(4, "gbs", 2)


def _garbage_manifest(d: Path) -> None:
    (d / "manifest.json").write_text("{ not json")


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _empty_gzip(path: Path) -> None:
    with gzip.open(path, "wb"):
        pass


# Broken data sets given to mpnn-train: (damage, message fragment; {data}: the data set,
# {shard}: the damaged shard). Exit status 1, one line naming the file.
TRAIN_BROKEN_DATA = {
    "no such path": (lambda d: shutil.rmtree(d), "{data}: no such file or directory"),
    "directory without manifest": (lambda d: (d / "manifest.json").unlink(), "{data}: no manifest.json"),
    "garbage manifest": (_garbage_manifest, "{data}/manifest.json: cannot read manifest"),
    "shard deleted": (lambda d: (d / SHARD).unlink(), "{shard}: missing (the manifest lists it with"),
    "shard emptied": (lambda d: (d / SHARD).write_bytes(b""), "{shard}: empty file, the manifest says"),
    # Caught before training by the byte size the manifest records (no file is read).
    # {size}: the shard's bytes (protobuf's map order, and so gzip's output, differ by stack).
    "shard truncated": (lambda d: _truncate(d / SHARD), "{shard}: {half} bytes, the manifest says {size}"),
    "byte flipped": (lambda d: _flip(d / SHARD), "damaged data set: {shard}: corrupt"),
    "no records, manifest counts some": (
        lambda d: _empty_gzip(d / SHARD), "{shard}: 50 bytes, the manifest says {size} (truncated or replaced)"
    ),
}


@pytest.mark.parametrize("case", sorted(TRAIN_BROKEN_DATA))
def test_train_on_a_broken_data_set_is_exit_1_naming_the_file(case, data, tmp_path, capsys):
    damage, fragment = TRAIN_BROKEN_DATA[case]
    size = (data / SHARD).stat().st_size
    damage(data)
    assert train.main(["--data", str(data), "--run-dir", str(tmp_path / "run"), *TINY]) == 1
    line = _one_error_line(capsys, "mpnn-train")
    assert fragment.format(data=data, shard=os.path.abspath(data / SHARD), size=size, half=size // 2) in line
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_geometry_model_on_records_without_coordinates_is_exit_1_naming_the_data_set(
    water_dataset, tmp_path, capsys
):
    argv = ["--data", str(water_dataset), "--run-dir", str(tmp_path / "run"), "--family", "schnet", "--epochs", "1"]
    assert train.main(argv) == 1
    line = _one_error_line(capsys, "mpnn-train")
    assert line.startswith(f"{water_dataset / 'manifest.json'}: the records have no geometry")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_resume_without_a_usable_checkpoint_is_exit_1_naming_the_run_directory(water_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    state = Path(checkpoint.state_directory(str(run_dir)))
    state.mkdir(parents=True)
    for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001", "ckpt-1.state.json"):
        (state / name).write_text("garbage")
    argv = ["--data", str(water_dataset), "--run-dir", str(run_dir), "--resume", *TINY]
    assert train.main(argv) == 1
    assert _one_error_line(capsys, "mpnn-train").startswith(f"{run_dir}: no usable checkpoint in {state} (ckpt-1: ")


@pytest.mark.integration  # trains an epoch
def test_resume_with_another_architecture_or_kind_of_records_is_exit_1_saying_so(
    water_dataset, pdbbind_dataset, tmp_path, capsys
):
    # E.g. a run of the MPNN's old default (4 steps with edge updates) resumed without its flags.
    run_dir = tmp_path / "run"
    assert train.main(["--data", str(water_dataset), "--run-dir", str(run_dir), *TINY]) == 0
    capsys.readouterr()
    argv = ["--data", str(water_dataset), "--run-dir", str(run_dir), "--resume", *TINY, "--width", "12", "--epochs", "2"]
    assert train.main(argv) == 1
    line = _one_error_line(capsys, "mpnn-train")
    assert line.startswith(f"{run_dir}: no usable checkpoint in ") and "incompatible tensor" in line
    assert line.endswith("another architecture than the configured one: pass the run's model flags "
                         "(an MPNN run made before 2026-12-02 without them: --message-steps 4 --edge-updates)")
    # Another data set of the same kind resumes (a moved copy); another kind is refused before
    # anything is written (the family `auto` would pick another model for it).
    saved = (run_dir / "config.json").read_bytes()
    assert train.main(["--data", str(pdbbind_dataset), "--run-dir", str(run_dir), "--resume", "--epochs", "2"]) == 1
    assert _one_error_line(capsys, "mpnn-train") == (
        f"{pdbbind_dataset / 'manifest.json'}: pdbbind records; {run_dir} was trained on water records"
    )
    assert (run_dir / "config.json").read_bytes() == saved


def test_resume_of_the_earlier_checkpoint_layout_is_exit_1(water_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "state-epoch-0003").mkdir(parents=True)
    (run_dir / "checkpoints" / "latest.json").write_text('{"directory": "state-epoch-0003"}')
    assert train.main(["--data", str(water_dataset), "--run-dir", str(run_dir), "--resume", *TINY]) == 1
    assert _one_error_line(capsys, "mpnn-train") == (
        f"{run_dir}: checkpoints of an earlier mpnn (latest.json) cannot be resumed; start a new run directory"
    )


# mpnn-evaluate: (flags besides --data, exit status, message fragment; {model}: the model).
EVALUATE_CASES = {
    "missing model": (["--model", "{tmp}/none.keras"], 1, "{tmp}/none.keras: no such file or directory (--model takes"),
    "a directory without a model": (
        ["--model", "{tmp}"], 1, "{tmp}: neither a run directory with model.keras nor an export with mpnn_export.json"
    ),
    "an export without inputs": (["--model", "{tmp}/export"], 1,
                                 "{tmp}/export: not a readable mpnn-export (mpnn_export.json: no 'inputs')"),
    "an export without its SavedModel": (["--model", "{tmp}/export-metadata-only"], 1,
                                         "{tmp}/export-metadata-only: not a readable mpnn-export (SavedModel file "
                                         "does not exist at: {tmp}/export-metadata-only/"),
    "garbage model": (["--model", "{tmp}/garbage.keras"], 1, "{tmp}/garbage.keras: not a readable saved model"),
    "truncated model": (["--model", "{tmp}/cut.keras"], 1, "{tmp}/cut.keras: not a readable saved model"),
    "unknown split": (["--model", "{model}", "--split", "nope"], 2,
                      "argument --split: invalid choice 'nope' (choose from test, train, valid)"),
    "zero batch": (["--model", "{model}", "--batch-size", "0"], 2,
                   "argument --batch-size: must be a whole number >= 1, got 0"),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_CASES))
def test_evaluate_misuse_and_broken_models(case, water_dataset, model_file, tmp_path, capsys):
    flags, status, fragment = EVALUATE_CASES[case]
    (tmp_path / "garbage.keras").write_text("not a model\n")
    (tmp_path / "cut.keras").write_bytes(model_file.read_bytes()[:2000])
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "mpnn_export.json").write_text("{}")
    (tmp_path / "export-metadata-only").mkdir()
    (tmp_path / "export-metadata-only" / "mpnn_export.json").write_text('{"inputs": ["atom"], "target": {"units": "eV"}}')
    fill = dict(tmp=tmp_path, model=model_file)
    argv = ["--data", str(water_dataset), *[f.format(**fill) for f in flags]]
    assert evaluate.main(argv) == status
    assert fragment.format(**fill) in _one_error_line(capsys, "mpnn-evaluate")


def test_evaluate_on_a_corrupt_test_shard_names_it(data, model_file, capsys):
    _flip(data / TEST_SHARD)
    assert evaluate.main(["--data", str(data), "--model", str(model_file)]) == 1
    line = _one_error_line(capsys, "mpnn-evaluate")
    assert line.startswith(f"damaged data set: {os.path.abspath(data / TEST_SHARD)}: corrupt")


def test_evaluate_with_a_missing_data_set_is_exit_1(model_file, tmp_path, capsys):
    assert evaluate.main(["--data", str(tmp_path / "none"), "--model", str(model_file)]) == 1
    assert _one_error_line(capsys, "mpnn-evaluate") == (
        f"{tmp_path / 'none'}: no such file or directory (--data takes a prepared data set)"
    )


@pytest.mark.parametrize("given", ["model file", "run directory"])
def test_evaluate_still_reports_on_good_inputs(water_dataset, model_file, capsys, given):
    model = model_file if given == "model file" else model_file.parent  # --model takes either
    assert evaluate.main(["--data", str(water_dataset), "--model", str(model)]) == 0
    manifest = json.loads((water_dataset / "manifest.json").read_text())
    assert capsys.readouterr().out.startswith(f"test: n {manifest['splits']['test']['records']} ")


@pytest.mark.integration
def test_the_console_script_prints_one_line_and_no_traceback(tmp_path):
    """As a user runs it: a separate process, the real exit status and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "mpnn.cli.train", "--data", str(tmp_path / "none"), "--epochs", "1"],
        capture_output=True, text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"mpnn-train: error: {tmp_path / 'none'}: no such file or directory (--data takes a prepared data set)"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.integration
def test_a_global_batch_that_does_not_split_across_two_ranks_stops_each_rank_with_exit_2(water_dataset, tmp_path):
    done = subprocess.run(
        [*HOROVODRUN_TWO_RANKS, sys.executable, "-m", "mpnn.cli.train",
         "--data", str(water_dataset), "--run-dir", str(tmp_path / "run"), "--batch-strategy", "gbs",
         "--batch-size", "3", "--epochs", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    output = done.stdout + done.stderr
    message = (
        "mpnn-train: error: argument --batch-size: with --batch-strategy gbs on 2 ranks it must be a multiple "
        "of 2 (2, 4, 6, ...), got 3"
    )
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"[{rank}]<stderr>:{message}" in output, output[-3000:]
    assert "[0]<stderr>:Traceback" not in output and "[1]<stderr>:Traceback" not in output
    assert not (tmp_path / "run" / "metrics.json").exists()


# mpnn-predict, mpnn-export and mpnn-design: (command, arguments, exit status, the message).
# ``{tmp}``: an existing directory that holds no model; ``{xyz}``: a valid structure file.
USE_CASES = {
    "predict: missing model": (
        "predict", ["--model", "nope", "{xyz}", "-o", "{tmp}/x.csv"], 1,
        "nope: no such file or directory (--model takes a run directory of mpnn-train, its model.keras, or an "
        "mpnn-export directory)",
    ),
    "predict: a directory without a model": (
        "predict", ["--model", "{tmp}", "{xyz}", "-o", "{tmp}/x.csv"], 1,
        "{tmp}: neither a run directory with model.keras nor an export with mpnn_export.json",
    ),
    "predict: batch size 0": (
        "predict", ["--model", "{tmp}", "{xyz}", "--batch-size", "0"], 2,
        "argument --batch-size: must be a whole number >= 1, got 0",
    ),
    "export: missing run directory": (
        "export", ["--model", "nope", "-o", "{tmp}/export"], 1,
        "nope: no such file or directory (--model takes a run directory of mpnn-train, its model.keras, or an "
        "mpnn-export directory)",
    ),
    "export: a directory without a model": (
        "export", ["--model", "{tmp}", "-o", "{tmp}/export"], 1,
        "{tmp}: neither a run directory with model.keras nor an export with mpnn_export.json",
    ),
    "export: the run directory given the old way": (
        "export", ["{tmp}", "-o", "{tmp}/export"], 1,
        "{tmp}: neither a run directory with model.keras nor an export with mpnn_export.json",
    ),
    "design: missing model": (
        "design", ["--model", "nope", "--start", "{xyz}", "--target-waters", "6", "-o", "{tmp}/out"], 1,
        "nope: no such file or directory (--model takes a run directory of mpnn-train, its model.keras, or an "
        "mpnn-export directory)",
    ),
    "design: missing start": (
        "design", ["--model", "{tmp}", "--start", "nope.xyz", "--target-waters", "6", "-o", "{tmp}/out"], 1,
        "nope.xyz: no such file or directory (--start takes a structure file or a network JSON)",
    ),
    "design: beam 0": (
        "design", ["--model", "{tmp}", "--start", "{xyz}", "--target-waters", "6", "--beam", "0", "-o", "{tmp}/o"], 2,
        "argument --beam: must be a whole number >= 1, got 0",
    ),
    "design: target of 0 waters": (
        "design", ["--model", "{tmp}", "--start", "{xyz}", "--target-waters", "0", "-o", "{tmp}/o"], 2,
        "argument --target-waters: must be a whole number >= 1, got 0",
    ),
}


@pytest.mark.parametrize("case", sorted(USE_CASES))
def test_predict_export_design_misuse_is_one_line(case, tmp_path, capsys):
    from mpnn.cli import design, export, predict
    from tests.helpers import MINIMA

    name, args, status, message = USE_CASES[case]
    command = {"predict": predict.main, "export": export.main, "design": design.main}[name]
    args = [a.format(tmp=tmp_path, xyz=MINIMA[0]) for a in args]
    try:
        code = command(args)
    except SystemExit as exit_:  # argparse's usage error
        code = exit_.code
    assert code == status
    assert _one_error_line(capsys, f"mpnn-{name}") == message.format(tmp=tmp_path)


def _raise(error: Exception):
    def work() -> int:
        raise error

    return work


@pytest.mark.parametrize(
    "error, line",
    [
        (WriteError("run/checkpoints/last.weights.h5", "No space left on device", 28),
         "cannot write run/checkpoints/last.weights.h5: No space left on device"),
        (RunLockedError("run: run directory in use by host n1, pid 7, job 9, since t (lock run/run.lock); wait"),
         "run: run directory in use by host n1, pid 7, job 9, since t (lock run/run.lock); wait"),
        (TrainingDiverged("training diverged at epoch 2, step 3 of 4: loss is nan (learning rate 1); ..."),
         "training diverged at epoch 2, step 3 of 4: loss is nan (learning rate 1); ..."),
    ],
    ids=["failed write", "run directory in use", "divergence"],
)
def test_run_failures_the_user_can_act_on_are_one_line_and_exit_1(error, line, capsys):
    assert run("mpnn-train", _raise(error)) == 1
    assert _one_error_line(capsys, "mpnn-train") == line
