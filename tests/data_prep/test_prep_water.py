"""mpnn-prep-water end to end: every input format, bad input, manifest and shards."""

from __future__ import annotations

import json
import shutil

import ase.db
import ase.io
import numpy as np
import pytest
import tensorflow as tf
from ase.calculators.singlepoint import SinglePointCalculator

from data_prep import records
from mpnn.cli.prep_water import main
from data_prep.structures import KCAL_PER_MOL_PER, read_structures
from tests.helpers import MINIMA


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _count_records(out, manifest):
    total = 0
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            path = str(out / shard["file"])
            n = sum(1 for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"))
            assert records.sha256_of(path) == shard["sha256"]
            assert n == shard["records"]
            total += n
    return total


def test_minima_directory(tmp_path):
    out = tmp_path / "out"
    assert main([str(MINIMA[0].parent), "-o", str(out), "--shards", "2", "--quiet"]) == 0
    manifest = _manifest(out)
    assert manifest["summary"] == {"converted": 28, "skipped": 0}
    assert _count_records(out, manifest) == 28
    assert "distance" in manifest["features"]
    assert manifest["totals"]["atoms"] == 3 * sum(range(3, 31))  # (H2O)n for n = 3..30
    assert len(manifest["sources"]) == 28 and all(len(s["sha256"]) == 64 for s in manifest["sources"])
    stats = manifest["target_stats"]
    assert stats["count"] == manifest["splits"]["train"]["records"]
    # Per-type means reproduce the training energies to within the residual spread.
    assert stats["residual_std"] < stats["std"]
    assert not list(out.glob("*.tmp-*"))


def test_extxyz_with_many_frames_in_ev_and_a_truncated_tail(tmp_path):
    frames = []
    for path in MINIMA[:4]:
        (structure,) = list(read_structures(str(path)))
        atoms = structure.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=structure.energy / KCAL_PER_MOL_PER["eV"])
        frames.append((atoms, structure.energy))
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, [a for a, _ in frames], format="extxyz")
    text = path.read_text()
    path.write_text(text + text.splitlines()[0] + "\nProperties=species:S:1:pos:R:3\nO 0.0 0.0\n")

    got = list(read_structures(str(path), energy_unit="eV"))
    assert [s.error is None for s in got] == [True] * 4 + [False]
    assert "unreadable" in got[-1].error
    for structure, (_, energy) in zip(got, frames):
        assert structure.energy == pytest.approx(energy, rel=1e-6)

    out = tmp_path / "out"
    assert main([str(path), "-o", str(out), "--energy-unit", "eV", "--quiet"]) == 0
    manifest = _manifest(out)
    assert manifest["summary"] == {"converted": 4, "skipped": 1}
    assert manifest["skipped"][0]["index"] == 4


def test_ase_database(tmp_path):
    db_path = tmp_path / "clusters.db"
    with ase.db.connect(str(db_path)) as db:
        for path in MINIMA[:3]:
            (structure,) = list(read_structures(str(path)))
            atoms = structure.atoms.copy()
            atoms.calc = SinglePointCalculator(atoms, energy=structure.energy)
            db.write(atoms)
        db.write(structure.atoms.copy())  # no energy
    got = list(read_structures(str(db_path)))
    assert [s.error for s in got[:3]] == [None] * 3
    assert "no energy" in got[3].error


def test_bad_inputs_are_skipped_with_reasons_and_nothing_valid_is_lost(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in MINIMA[:5]:
        shutil.copy(path, inputs)
    good = MINIMA[5].read_text().splitlines()
    (inputs / "truncated.xyz").write_text("\n".join(good[: len(good) // 2]) + "\n")
    (inputs / "nitrogen.xyz").write_text("\n".join(good[:2] + [good[2].replace("O", "N", 1)] + good[3:]) + "\n")
    (inputs / "no_energy.xyz").write_text("\n".join([good[0], "a comment"] + good[2:]) + "\n")
    (inputs / "lone_h.xyz").write_text("\n".join([str(int(good[0]) + 1), good[1]] + good[2:] + ["H 99 99 99"]) + "\n")
    (inputs / "nan.xyz").write_text("\n".join(good[:2] + ["O nan 0.0 0.0"] + good[3:]) + "\n")
    (inputs / "empty.xyz").write_text("")

    out = tmp_path / "out"
    assert main([str(inputs), "-o", str(out), "--quiet"]) == 0
    manifest = _manifest(out)
    assert manifest["summary"] == {"converted": 5, "skipped": 6}
    reasons = {entry["source"].rsplit("/", 1)[1]: entry["reason"] for entry in manifest["skipped"]}
    assert "unreadable" in reasons["truncated.xyz"]
    assert "other than O/H: N" in reasons["nitrogen.xyz"]
    assert "no energy" in reasons["no_energy.xyz"]
    assert "no O within" in reasons["lone_h.xyz"]
    assert "non-finite" in reasons["nan.xyz"] or "unreadable" in reasons["nan.xyz"]
    assert "empty" in reasons["empty.xyz"]
    assert _count_records(out, manifest) == 5

    assert main([str(inputs), "-o", str(tmp_path / "strict"), "--strict", "--quiet"]) == 1


def test_exits_non_zero_when_nothing_converts(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\n-1.0\nC 0 0 0\nH 1 0 0\nH 0 1 0\n")
    assert main([str(bad), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    assert main([str(tmp_path / "missing.xyz"), "-o", str(tmp_path / "out"), "--quiet"]) == 1


@pytest.mark.integration  # a spawned converter worker
def test_tutorial_records_are_imported_with_every_tenth_in_test(water_dataset, tutorial_subset, tmp_path):
    out = tmp_path / "out"
    args = [str(tutorial_subset), "-o", str(out), "--test-every", "10", "--fractions", "0.9", "0.1", "0"]
    assert main(args + ["--workers", "2", "--compression", "none", "--quiet"]) == 0
    manifest = _manifest(out)
    assert manifest["summary"] == {"converted": 2000, "skipped": 0}
    assert "distance" not in manifest["features"]
    assert manifest["splits"]["test"]["records"] == 200
    test_file = out / manifest["splits"]["test"]["shards"][0]["file"]
    assert test_file.name.endswith(".tfrecord")
    ids = set()
    for shard in manifest["splits"]["test"]["shards"]:
        for record in tf.data.TFRecordDataset(str(out / shard["file"])):
            example = tf.train.Example.FromString(record.numpy())
            ids.add(example.features.feature["record_id"].bytes_list.value[0].decode())
    assert ids == {f"subset.proto.gz:{i}" for i in range(0, 2000, 10)}


def test_tutorial_bond_types_are_made_consistent_with_the_connectivity(tutorial_subset, water_dataset):
    """The tutorial file's bond types are not aligned with its sorted connectivity; the
    imported records must have every O with two covalent bonds and every H with one."""
    from data_prep.tutorial_records import REPAIRED_BOND_TYPES, covalent_bonds_consistent, tutorial_graph
    from mpnn.graph_format.tfrecord import read_records

    graphs = [tutorial_graph(r, "subset") for _, r in zip(range(50), read_records(str(tutorial_subset)))]
    assert all(covalent_bonds_consistent(g["atom"], g["connectivity"], g["bond"]) for g in graphs)
    assert _manifest(water_dataset)["notes"] == {REPAIRED_BOND_TYPES: 2000}
    raw = next(iter(tf.data.TFRecordDataset(str(tutorial_subset), compression_type="GZIP")))
    feature = tf.train.Example.FromString(raw.numpy()).features.feature
    atom = np.array(feature["atom"].int64_list.value)
    connectivity = np.array(feature["connectivity"].int64_list.value).reshape(-1, 2)
    assert not covalent_bonds_consistent(atom, connectivity, np.array(feature["bond"].int64_list.value))


def test_split_rule_is_seeded_and_follows_the_fractions():
    ids = [f"w.xyz:{i}" for i in range(20000)]
    rule = records.SplitRule((0.8, 0.1, 0.1), seed=3)
    splits = [rule.split_of(i, record_id) for i, record_id in enumerate(ids)]
    assert splits == [records.SplitRule((0.8, 0.1, 0.1), seed=3).split_of(i, r) for i, r in enumerate(ids)]
    assert splits != [records.SplitRule((0.8, 0.1, 0.1), seed=4).split_of(i, r) for i, r in enumerate(ids)]
    counts = {split: splits.count(split) for split in records.SPLITS}
    # Binomial spread: 3 standard deviations of 20,000 draws at p = 0.1 is about 130.
    assert abs(counts["train"] - 16000) < 200 and abs(counts["valid"] - 2000) < 130
    every = records.SplitRule((0.9, 0.1, 0.0), seed=0, test_every=10)
    tested = [i for i, r in enumerate(ids) if every.split_of(i, r) == "test"]
    assert tested == list(range(0, 20000, 10))


def test_tutorial_tasks_count_every_record_once_with_their_global_positions(tutorial_subset):
    from data_prep.prep_water import TASK_FRAMES, plan_tasks

    files = [str(MINIMA[0]), str(tutorial_subset), str(MINIMA[1])]
    for parts in (1, 3):
        tasks = plan_tasks(files, "kcal/mol", False, parts)
        tutorial = [t for t in tasks if t.kind == "tutorial"]
        size = max(TASK_FRAMES, -(-2000 // parts))
        assert [(t.start, t.stop) for t in tutorial] == [(s, min(2000, s + size)) for s in range(0, 2000, size)]
        assert [t.position for t in tasks] == [0, *(1 + t.start for t in tutorial), 2001]


def _xyz_frames(rng: np.random.Generator, n_frames: int) -> tuple[bytes, list[int]]:
    """XYZ text of `n_frames` random frames (0 to 4 atoms, ragged spacing) and their offsets."""
    text, starts = b"", []
    for frame in range(n_frames):
        starts.append(len(text))
        n_atoms = int(rng.integers(0, 5))
        lines = [f"{' ' * int(rng.integers(0, 3))}{n_atoms}", f"{-frame * 1.5}"]
        lines += [f"H {rng.normal():.3f} {rng.normal():.3f} {rng.normal():.3f}" for _ in range(n_atoms)]
        text += ("\n".join(lines) + "\n").encode()
    return text, starts


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_frame_scan_finds_every_frame_whatever_the_block_size(monkeypatch, block):
    import io

    from data_prep import structures

    monkeypatch.setattr(structures, "_SCAN_BLOCK", block)
    rng = np.random.default_rng(block)
    text, starts = _xyz_frames(rng, 40)
    frames = structures.scan_xyz_frames(io.BytesIO(text))
    assert (frames.starts.tolist(), frames.end, frames.tail) == (starts, len(text), False)
    # No newline after the last atom line: still a complete frame.
    last = structures.scan_xyz_frames(io.BytesIO(text.rstrip(b"\n")))
    assert (last.starts.tolist(), last.tail) == (starts, False)
    # Trailing blank lines are no frame; a frame cut short or a non-count line is the tail.
    blank = structures.scan_xyz_frames(io.BytesIO(text + b"\n  \n"))
    assert (blank.count, blank.tail) == (40, False)
    truncated = structures.scan_xyz_frames(io.BytesIO(text + b"5\ncomment\nH 0 0 0\n"))
    assert (truncated.starts.tolist(), truncated.end, truncated.tail) == (starts, len(text), True)
    garbage = structures.scan_xyz_frames(io.BytesIO(text + b"not a count\n1\n0\nH 0 0 0\n"))
    assert (garbage.count, garbage.end, garbage.tail) == (41, len(text), True)


@pytest.mark.integration  # a spawned converter worker
def test_xyz_and_database_tasks_of_many_chunks_give_the_same_records(tmp_path, monkeypatch):
    from data_prep import prep_water

    structures = [next(read_structures(str(path))) for path in MINIMA[:7]]
    frames = []
    for structure in structures:
        atoms = structure.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=structure.energy)
        frames.append(atoms)
    ase.io.write(tmp_path / "frames.extxyz", frames, format="extxyz")
    with ase.db.connect(str(tmp_path / "frames.db")) as db:
        for atoms in frames:
            db.write(atoms)
        db.write(structures[0].atoms.copy())  # no energy
    inputs = [str(tmp_path / "frames.extxyz"), str(tmp_path / "frames.db")]
    whole = main([*inputs, "-o", str(tmp_path / "whole"), "--quiet"])
    monkeypatch.setattr(prep_water, "TASK_FRAMES", 3)
    tasks = prep_water.plan_tasks(inputs, "kcal/mol", True)
    assert [(t.kind, t.position, t.start, t.stop) for t in tasks] == [
        ("xyz", 0, 0, 3), ("xyz", 3, 3, 6), ("xyz", 6, 6, 7), ("db", 7, 0, 3), ("db", 10, 3, 6), ("db", 13, 6, 8),
    ]
    assert whole == main([*inputs, "-o", str(tmp_path / "chunked"), "--quiet", "--workers", "2"]) == 0
    one, chunked = _manifest(tmp_path / "whole"), _manifest(tmp_path / "chunked")
    assert one["summary"] == chunked["summary"] == {"converted": 14, "skipped": 1}
    assert one["skipped"] == chunked["skipped"] and chunked["skipped"][0]["index"] == 7

    def by_split(out, manifest):
        return {
            split: sorted(r.numpy() for s in entry["shards"]
                          for r in tf.data.TFRecordDataset(str(out / s["file"]), compression_type="GZIP"))
            for split, entry in manifest["splits"].items()
        }

    assert by_split(tmp_path / "whole", one) == by_split(tmp_path / "chunked", chunked)


def _n_waters_by_split(out, manifest):
    """{split: [n_waters of each record]} of a prepared data set."""
    found = {}
    for split, info in manifest["splits"].items():
        found[split] = []
        for shard in info["shards"]:
            for raw in tf.data.TFRecordDataset(str(out / shard["file"]), compression_type="GZIP"):
                feature = tf.train.Example.FromString(raw.numpy()).features.feature
                found[split].append(feature["n_waters"].int64_list.value[0])
    return found


def test_test_groups_put_every_cluster_of_those_sizes_in_test_and_split_the_rest(tutorial_subset):
    sizes = []
    for raw in tf.data.TFRecordDataset(str(tutorial_subset), compression_type="GZIP"):
        sizes.append(tf.train.Example.FromString(raw.numpy()).features.feature["n_waters"].int64_list.value[0])
    out = tutorial_subset.parent / "groups"
    argv = [str(tutorial_subset), "-o", str(out), "--test-groups", "10-11", "--fractions", "0.9", "0.1", "0"]
    assert main([*argv, "--shards", "1", "--quiet"]) == 0
    manifest = _manifest(out)
    found = _n_waters_by_split(out, manifest)
    assert sorted(found["test"]) == sorted(n for n in sizes if n in (10, 11))
    assert 0 < len(found["test"]) < len(sizes)
    rest = found["train"] + found["valid"]
    assert sorted(rest) == sorted(n for n in sizes if n not in (10, 11))
    assert abs(len(found["valid"]) - 0.1 * len(rest)) < 3 * np.sqrt(0.09 * len(rest))
    assert manifest["options"]["test_groups"] == [10, 11]


def test_split_rule_test_groups_come_before_the_other_rules():
    rule = records.SplitRule((0.9, 0.1, 0.0), seed=0, test_every=10, test_groups=(10, 11))
    assert [rule.split_of(1, "a", n) for n in (9, 10, 11, 12)][1:3] == ["test", "test"]
    assert rule.split_of(20, "b", 3) == "test"  # every 10th still test
    assert {rule.split_of(p, f"c{p}", 5) for p in range(1, 10)} <= {"train", "valid"}
    with pytest.raises(ValueError, match="group"):
        rule.split_of(1, "d")
    with pytest.raises(ValueError, match="LO must not exceed HI"):
        records.SplitRule((0.9, 0.1, 0.0), test_groups=(11, 10))


@pytest.mark.parametrize("value", ["11-10", "ten", "1-2-3", "-1"])
def test_bad_test_groups_are_a_usage_error(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(MINIMA[0]), "-o", str(tmp_path / "out"), "--test-groups", value])
    assert exit_info.value.code == 2
    assert "--test-groups" in capsys.readouterr().err
