"""mpnn.rundir: one reader of a run directory, and what every command's ``--model`` is."""

from __future__ import annotations

import json

import pytest

from mpnn.errors import InputError
from mpnn.rundir import EXPORT_METADATA, MODEL_FILE, RunDir, locate_model


def test_locate_model_takes_a_run_directory_its_model_file_or_an_export(tmp_path):
    run, export = tmp_path / "run", tmp_path / "export"
    run.mkdir()
    export.mkdir()
    (run / MODEL_FILE).write_bytes(b"")
    (export / EXPORT_METADATA).write_text("{}")
    assert locate_model(str(run)) == locate_model(str(run / MODEL_FILE))
    assert (locate_model(str(run)).kind, locate_model(str(run)).model_file) == ("run", str(run / MODEL_FILE))
    assert (locate_model(str(export)).kind, locate_model(str(export)).path) == ("export", str(export))


@pytest.mark.parametrize(
    "given, message",
    [
        ("nope", "{tmp}/nope: no such file or directory (--model takes a run directory of mpnn-train, its "
                 "model.keras, or an mpnn-export directory)"),
        ("", "{tmp}: neither a run directory with model.keras nor an export with mpnn_export.json"),
        ("notes.txt", "{tmp}/notes.txt: not a model (--model takes a run directory of mpnn-train, its model.keras, "
                      "or an mpnn-export directory)"),
    ],
    ids=["missing", "empty directory", "another file"],
)
def test_locate_model_names_what_is_wrong(tmp_path, given, message):
    (tmp_path / "notes.txt").write_text("notes\n")
    with pytest.raises(InputError) as error:
        locate_model(str(tmp_path / given) if given else str(tmp_path))
    assert str(error.value) == message.format(tmp=tmp_path)


def test_a_run_directory_is_read_in_one_place(tmp_path):
    run = RunDir(str(tmp_path))
    with pytest.raises(InputError, match=r"metrics.json: no such file \(has the run finished\?\)"):
        run.metrics()
    assert run.family() is None and run.manifest() is None and run.log_rows() == []
    (tmp_path / "config.json").write_text(json.dumps({"data": str(tmp_path / "none"), "model": "schnet"}))
    assert run.family() == "schnet"  # the key of runs made before TrainConfig.family
    (tmp_path / "metrics.json").write_text(json.dumps({"model": "mpnn"}))
    assert run.family() == "mpnn"  # what the run trained, over what it was asked
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="metrics.json: expected a JSON object, got list"):
        run.metrics()
    (tmp_path / "log.csv").write_text("epoch,loss\n0,1.5\n1,1.25\n")
    assert [row["loss"] for row in run.log_rows()] == ["1.5", "1.25"]


def test_the_manifest_of_a_run_is_its_data_sets(water_dataset, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"data": str(water_dataset)}))
    manifest = RunDir(str(tmp_path)).manifest()
    assert manifest is not None and manifest.kind == "water"
