"""The streaming conversion: the same records as the converter before it, in the same
splits whatever the number of parts (processes, MPI ranks), exact statistics, no
TensorFlow in the workers, and failures that never kill the run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import google.protobuf
import numpy as np
import pytest

from data_prep import records
from data_prep.pipeline import OutputOptions
from data_prep.prep_water import WaterOptions, prepare_water
from mpnn.graph_format.example import Example
from mpnn.graph_format.manifest import Manifest
from mpnn.graph_format.tfrecord import read_records
from tests.helpers import MINIMA, PDBBIND, TUTORIAL_FILE

REFERENCE = json.loads((Path(__file__).parent / "reference_records.json").read_text())


def _records_by_split(manifest: Manifest) -> dict[str, list[bytes]]:
    return {
        split: [r for path in manifest.split(split)[0] for r in read_records(path)] for split in records.SPLITS
    }


def _digest(serialized: list[bytes]) -> str:
    """What tests/data_prep/reference_records.json holds: the hash of the sorted record hashes."""
    return hashlib.sha256("".join(sorted(hashlib.sha256(r).hexdigest() for r in serialized)).encode()).hexdigest()


def _split_of_each_record(manifest: Manifest) -> dict[str, tuple[str, str]]:
    """record_id -> (split, sha256 of the record); fails on a record written twice."""
    result: dict[str, tuple[str, str]] = {}
    for split, serialized in _records_by_split(manifest).items():
        for record in serialized:
            record_id = Example.FromString(record).features.feature["record_id"].bytes_list.value[0].decode()
            assert record_id not in result, f"{record_id} written twice"
            result[record_id] = (split, hashlib.sha256(record).hexdigest())
    return result


def _water(inputs, out, cutoff: float = 0.0, **options) -> Manifest:
    """Converted without geometry unless `cutoff` is given: the reference records predate it."""
    options = WaterOptions(OutputOptions(str(out), show_progress=False, **options), cutoff=cutoff)
    return prepare_water([str(i) for i in inputs], options)


def _reference_statistics(manifest: Manifest) -> dict[str, float]:
    """`target_stats` as the converter before streaming computed them: least squares on
    the design matrix of the training records."""
    targets, counts = [], []
    for record in _records_by_split(manifest)["train"]:
        feature = Example.FromString(record).features.feature
        targets.append(feature["energy"].float_list.value[0])
        counts.append(np.bincount(feature["atom"].int64_list.value, minlength=len(manifest.vocab["atom"])))
    targets, counts = np.array(targets, np.float64), np.array(counts, np.float64)
    design = np.concatenate([counts, np.ones((len(counts), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    extensive, *_ = np.linalg.lstsq(counts, targets, rcond=None)  # no intercept
    return {
        **{f"reference_{t}": m for t, m in zip(manifest.vocab["atom"], extensive)},
        "count": len(targets), "mean": targets.mean(), "std": targets.std(), "min": targets.min(),
        "max": targets.max(), "graph_offset": solution[-1],
        **{f"mean_{t}": m for t, m in zip(manifest.vocab["atom"], solution[:-1])},
        "residual_std": (targets - design @ solution).std(), "atoms_per_graph_mean": counts.sum(axis=1).mean(),
    }


def _statistics(manifest: Manifest) -> dict[str, float]:
    stats = manifest.target_stats
    flat = {k: v for k, v in vars(stats).items() if k not in ("per_atom_type_mean", "per_atom_type_reference")}
    return {
        **flat, **{f"mean_{t}": m for t, m in stats.per_atom_type_mean.items()},
        **{f"reference_{t}": m for t, m in stats.per_atom_type_reference.items()},
    }


# The reference digests hash serialised bytes, whose order of map entries (the features)
# is protobuf's choice: protobuf 4 (the horovod stack) wrote the references; protobuf 5+ (the
# current stack, TensorFlow 2.21) writes the same entries, values equal, in another order.
SAME_PROTOBUF_AS_REFERENCES = int(google.protobuf.__version__.split(".")[0]) < 5


def test_minima_records_are_those_of_the_previous_converter(tmp_path):
    manifest = _water([MINIMA[0].parent], tmp_path / "out")
    serialized = [r for split in _records_by_split(manifest).values() for r in split]
    assert len(serialized) == REFERENCE["minima"]["n"]
    if SAME_PROTOBUF_AS_REFERENCES:
        assert _digest(serialized) == REFERENCE["minima"]["all"]
    reference = _reference_statistics(manifest)
    assert _statistics(manifest) == pytest.approx(reference, rel=1e-9, abs=1e-9)


def test_geometry_leaves_the_topology_features_as_they_were(tmp_path):
    plain = _records_by_split(_water([MINIMA[0].parent], tmp_path / "plain"))
    with_geometry = _records_by_split(_water([MINIMA[0].parent], tmp_path / "geometry", cutoff=6.0))
    for split, records in plain.items():
        for before, after in zip(records, with_geometry[split], strict=True):
            old = Example.FromString(before).features.feature
            new = Example.FromString(after).features.feature
            assert set(new) - set(old) == {"positions", "n_pair", "pair_connectivity"}
            assert all(new[name] == old[name] for name in old)


@pytest.mark.integration
def test_tutorial_records_and_test_split_are_those_of_the_previous_converter(tmp_path):
    manifest = _water([TUTORIAL_FILE], tmp_path / "out", test_every=10, workers=2)
    by_split = _records_by_split(manifest)
    assert _digest([r for split in by_split.values() for r in split]) == REFERENCE["tutorial"]["all"]
    assert len(by_split["test"]) == REFERENCE["tutorial"]["n_test"]
    assert _digest(by_split["test"]) == REFERENCE["tutorial"]["test"]
    assert _statistics(manifest) == pytest.approx(_reference_statistics(manifest), rel=1e-9, abs=1e-9)


@pytest.mark.integration  # spawned converter workers
def test_same_records_in_the_same_splits_whatever_the_number_of_parts(tutorial_subset, tmp_path):
    inputs = [tutorial_subset, MINIMA[0].parent]
    manifests = {parts: _water(inputs, tmp_path / f"p{parts}", test_every=10, shards=3, workers=parts)
                 for parts in (1, 2, 3)}
    splits = {parts: _split_of_each_record(m) for parts, m in manifests.items()}
    assert len(splits[1]) == 2028 == manifests[1].summary.converted
    assert splits[2] == splits[1] and splits[3] == splits[1]
    assert {r for r, (split, _) in splits[1].items() if split == "test" and r.startswith("subset")} == {
        f"subset.proto.gz:{i}" for i in range(0, 2000, 10)
    }
    reference = _reference_statistics(manifests[1])
    for parts, manifest in manifests.items():
        assert _statistics(manifest) == pytest.approx(reference, rel=1e-9, abs=1e-9)
        assert len(manifest.timing["parts"]) == parts
        files = [s.file for split in manifest.splits.values() for s in split.shards]
        assert len(files) == len(set(files)) and all(os.path.exists(tmp_path / f"p{parts}" / f) for f in files)
    # Workers are spawned processes that never import TensorFlow (this test process has).
    assert [p["tensorflow_imported"] for p in manifests[3].timing["parts"][1:]] == [False, False]
    assert len({p["pid"] for p in manifests[3].timing["parts"]}) == 3


@pytest.mark.integration  # a spawned converter worker
def test_pdbbind_workers_do_not_import_tensorflow(tmp_path):
    from data_prep.prep_pdbbind import PdbbindOptions, prepare_pdbbind

    index = str(PDBBIND / "index" / "INDEX_general_PL_data.2016")
    options = PdbbindOptions(OutputOptions(str(tmp_path), workers=2, show_progress=False), (index,), cutoff=4.5)
    manifest = prepare_pdbbind([str(PDBBIND)], options)
    assert manifest.summary.converted == 6
    assert [p["tensorflow_imported"] for p in manifest.timing["parts"]] == [True, False]  # parent: pytest's TF


def test_a_structure_failing_inside_the_converter_is_a_skip(tmp_path, monkeypatch):
    from data_prep import prep_water

    def failing(atoms, energy, record_id):
        if record_id.startswith("w12_"):
            raise IndexError("something unforeseen")
        return original(atoms, energy, record_id)

    original = prep_water.water_graph
    monkeypatch.setattr(prep_water, "water_graph", failing)
    manifest = _water(MINIMA[:4], tmp_path / "out")
    assert manifest.summary.converted == 3
    (skip,) = manifest.skipped
    assert (os.path.basename(skip.source), skip.index) == ("w12_lowest.xyz", 0)
    assert skip.reason == "conversion failed: IndexError: something unforeseen"


@pytest.mark.integration  # a spawned converter worker
def test_strict_mode_stops_and_leaves_no_shards(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in MINIMA[:4]:
        (inputs / path.name).write_bytes(path.read_bytes())
    (inputs / "w99_bad.xyz").write_text("3\n-1.0\nC 0 0 0\nH 1 0 0\nH 0 1 0\n")
    with pytest.raises(records.StrictModeError, match="w99_bad.xyz \\[0\\]"):
        _water([inputs], tmp_path / "out", workers=2, strict=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


@pytest.mark.integration
def test_two_mpi_ranks_write_the_same_data_set_as_one_process(tutorial_subset, tmp_path):
    args = [str(tutorial_subset), str(MINIMA[0].parent), "--test-every", "10", "--shards", "4", "--quiet"]
    single = _water([tutorial_subset, MINIMA[0].parent], tmp_path / "single", test_every=10)
    command = [sys.executable, "-m", "mpnn.cli.prep_water", *args, "-o", str(tmp_path / "mpi"), "--mpi"]
    result = subprocess.run(
        ["mpirun", "-np", "2", "--oversubscribe", *command, "--workers", "2"], capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    spread = Manifest.load(str(tmp_path / "mpi"))
    assert spread.ranks == 2 and len(spread.timing["parts"]) == 4
    assert spread.summary == single.summary
    assert _split_of_each_record(spread) == _split_of_each_record(single)
    assert _statistics(spread) == pytest.approx(_statistics(single), rel=1e-9, abs=1e-9)
    assert {s.file[:11] for s in spread.splits["train"].shards} == {f"train-p000{p}" for p in range(4)}


def test_written_manifest_follows_its_json_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    import mpnn.graph_format

    schema = json.loads((Path(mpnn.graph_format.__file__).parent / "manifest.schema.json").read_text())
    _water(MINIMA[:3], tmp_path / "out")
    content = json.loads((tmp_path / "out" / "manifest.json").read_text())
    jsonschema.validate(content, schema)
    content["splits"]["holdout"] = content["splits"]["test"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(content, schema)


@pytest.mark.integration  # a fresh interpreter per module
@pytest.mark.parametrize(
    "module, heavy", [("data_prep.prep_water", ("tensorflow", "scipy")), ("data_prep.prep_pdbbind", ("tensorflow",))]
)
def test_converter_modules_import_no_tensorflow(module, heavy):
    """Spawned workers import the converter's module: with TensorFlow each would spend
    seconds starting (and water workers that only see tutorial records need no scipy)."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
