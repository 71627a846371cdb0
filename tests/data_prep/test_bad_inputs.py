"""Broken and unusual converter inputs, each with its exact outcome: exit status, the skip
entries of the manifest (file and reason) and the records converted.

Every case runs the command in-process (``main([...])``) on one to three small structures.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from mpnn.cli import prep_pdbbind, prep_water
from mpnn import verify
from tests.helpers import SAMPLES, TUTORIAL_FILE, WATER

W5 = WATER / "minima" / "w5_lowest.xyz"
W6 = WATER / "minima" / "w6_lowest.xyz"
PDBBIND = SAMPLES / "pdbbind"
GENERAL = PDBBIND / "index" / "INDEX_general_PL_data.2016"
CORE = PDBBIND / "index" / "INDEX_core_data.2016"


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty input directory ``in/`` under a fresh working directory (relative paths as
    a user types them)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    return tmp_path


def _convert(*inputs: str, extra: tuple[str, ...] = ()) -> tuple[int, dict | None]:
    """Exit status of ``mpnn-prep-water INPUTS -o out`` and its manifest (None if none)."""
    status = prep_water.main([*inputs, "-o", "out", "--shards", "1", "--quiet", *extra])
    path = Path("out/manifest.json")
    return status, json.loads(path.read_text()) if path.exists() else None


def _skipped(manifest: dict) -> list[tuple[str, str]]:
    return sorted((entry["source"], entry["reason"]) for entry in manifest["skipped"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- files that cannot be read are skips, never the end of the run ---------------------


def test_a_symlink_loop_is_skipped_and_the_valid_file_converted(work):
    shutil.copy(W5, "in/")
    os.symlink("b.xyz", "in/a.xyz")
    os.symlink("a.xyz", "in/b.xyz")
    status, manifest = _convert("in/*.xyz")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 2}
    assert _skipped(manifest) == [("in/a.xyz", "symlink loop"), ("in/b.xyz", "symlink loop")]


def test_a_dangling_symlink_is_skipped_with_its_target(work):
    shutil.copy(W5, "in/")
    os.symlink("nowhere.xyz", "in/gone.xyz")
    status, manifest = _convert("in")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 1}
    assert _skipped(manifest) == [("in/gone.xyz", "dangling symlink (to nowhere.xyz)")]


def test_a_dangling_symlink_given_by_name_is_a_skip_not_a_missing_input(work):
    shutil.copy(W5, "in/")
    os.symlink("nowhere.xyz", "in/gone.xyz")
    status, manifest = _convert("in/w5_lowest.xyz", "in/gone.xyz")
    assert status == 0
    assert _skipped(manifest) == [("in/gone.xyz", "dangling symlink (to nowhere.xyz)")]


def test_a_directory_matched_by_a_glob_is_skipped(work):
    shutil.copy(W5, "in/")
    (work / "in" / "sub.xyz").mkdir()  # open() raises IsADirectoryError, as root too
    status, manifest = _convert("in/*.xyz")
    assert status == 0
    assert manifest["summary"]["converted"] == 1
    assert _skipped(manifest) == [("in/sub.xyz", "a directory matched as a file")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission_is_skipped(work):
    shutil.copy(W5, "in/")
    shutil.copy(W6, "in/")
    os.chmod("in/w6_lowest.xyz", 0)
    status, manifest = _convert("in")
    assert status == 0
    assert _skipped(manifest) == [("in/w6_lowest.xyz", "unreadable: Permission denied")]


def test_a_damaged_gzip_file_is_skipped(work):
    shutil.copy(W5, "in/")
    Path("in/bad.xyz.gz").write_bytes(b"hi\n")
    status, manifest = _convert("in")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 1}
    assert _skipped(manifest) == [("in/bad.xyz.gz", "unreadable: Not a gzipped file (b'hi')")]


def test_a_damaged_tutorial_file_is_skipped(work):
    shutil.copy(W5, "in/")
    Path("in/x.tfrecord").write_bytes(b"junk")
    status, manifest = _convert("in")
    assert status == 0
    assert _skipped(manifest) == [("in/x.tfrecord", "truncated at record 0 (header cut short)")]


def test_strict_mode_stops_at_an_unreadable_input_and_writes_nothing(work):
    shutil.copy(W5, "in/")
    os.symlink("b.xyz", "in/a.xyz")
    os.symlink("a.xyz", "in/b.xyz")
    assert _convert("in", extra=("--strict",)) == (1, None)


def test_only_unreadable_inputs_is_an_error_without_a_manifest(work):
    os.symlink("nowhere.xyz", "in/gone.xyz")
    assert _convert("in/gone.xyz") == (1, None)


def test_a_missing_input_is_one_line_naming_it(work, capsys):
    assert _convert("in/nope.xyz") == (1, None)
    assert _errors(capsys) == [
        "in/nope.xyz: no such file or directory, and no file matches it as a pattern"
    ]


# -- each real file is read once --------------------------------------------------------


def test_a_recursive_glob_through_a_directory_symlink_loop_reads_the_file_once(work):
    shutil.copy(W5, "in/")
    os.symlink(".", "in/self")
    status, manifest = _convert("in/**/*.xyz")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 0}


def test_a_recursive_glob_through_two_symlink_loops_ends_and_reads_each_file_once(work):
    """glob.glob alone would list 2**40 paths here (each link followed until the path is too long)."""
    shutil.copy(W5, "in/")
    (work / "in" / "sub").mkdir()
    shutil.copy(W6, "in/sub/")
    os.symlink(".", "in/a")
    os.symlink(".", "in/b")
    os.symlink("..", "in/sub/up")
    status, manifest = _convert("in/**/*.xyz")
    assert status == 0
    assert manifest["summary"] == {"converted": 2, "skipped": 0}
    assert sorted(s["path"] for s in manifest["sources"]) == [
        str(work / "in" / "sub" / "w6_lowest.xyz"), str(work / "in" / "w5_lowest.xyz")
    ]


def test_a_directory_with_a_symlink_loop_is_searched_once(work):
    shutil.copy(W5, "in/")
    os.symlink(".", "in/self")
    os.symlink("..", "in/parent")
    status, manifest = _convert("in")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 0}


def test_a_file_named_twice_and_through_a_link_is_read_once(work):
    shutil.copy(W5, "in/")
    os.symlink("w5_lowest.xyz", "in/alias.xyz")
    status, manifest = _convert("in/w5_lowest.xyz", "in/alias.xyz", "in", "in/*.xyz")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 0}
    assert [s["path"] for s in manifest["sources"]] == [str(work / "in" / "w5_lowest.xyz")]


# -- directory mode: every structure file ASE reads, the others listed -------------------


def test_directory_mode_reads_upper_case_and_compressed_files(work):
    shutil.copy(W5, "in/A.XYZ")
    text = W6.read_bytes()
    Path("in/b.xyz.gz").write_bytes(gzip.compress(text))
    Path("in/c.xyz.bz2").write_bytes(bz2.compress(text))
    Path("in/d.XYZ.XZ").write_bytes(lzma.compress(text))
    status, manifest = _convert("in")
    assert status == 0
    assert manifest["summary"] == {"converted": 4, "skipped": 0}


def test_directory_mode_lists_the_files_it_passes_over(work):
    shutil.copy(W5, "in/")
    Path("in/README.txt").write_text("notes\n")
    Path("in/LICENSE").write_text("license\n")
    Path("in/table.csv.gz").write_bytes(gzip.compress(b"a,b\n"))
    status, manifest = _convert("in")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 3}
    assert _skipped(manifest) == [
        ("in/LICENSE", "not a structure file: no suffix"),
        ("in/README.txt", "not a structure file: .txt"),
        ("in/table.csv.gz", "not a structure file: .csv.gz"),
    ]


def test_passed_over_files_do_not_stop_strict_mode(work):
    shutil.copy(W5, "in/")
    Path("in/README.txt").write_text("notes\n")
    status, manifest = _convert("in", extra=("--strict",))
    assert status == 0
    assert _skipped(manifest) == [("in/README.txt", "not a structure file: .txt")]


# -- databases are opened read-only and never changed ---------------------------------------


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"not a database\n", "not an ASE database (no SQLite header)"),
    ],
    ids=["0 bytes", "text"],
)
def test_a_database_that_is_not_one_is_skipped_and_left_unchanged(work, content, reason):
    shutil.copy(W5, "in/")
    Path("in/x.db").write_bytes(content)
    status, manifest = _convert("in")
    assert status == 0
    assert _skipped(manifest) == [("in/x.db", reason)]
    assert Path("in/x.db").read_bytes() == content


def test_an_sqlite_file_that_is_not_an_ase_database_is_skipped_and_left_unchanged(work):
    shutil.copy(W5, "in/")
    with sqlite3.connect("in/other.db") as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    before = _sha256(work / "in" / "other.db")
    status, manifest = _convert("in")
    assert status == 0
    assert _skipped(manifest) == [("in/other.db", "not an ASE database (an SQLite file without its 'systems' table)")]
    assert _sha256(work / "in" / "other.db") == before


def test_an_ase_database_is_converted_and_left_unchanged(work):
    import ase.db
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = ase.io.read(W5, format="extxyz")
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5)
    with ase.db.connect("in/w.db") as db:
        db.write(atoms)
    before = _sha256(work / "in" / "w.db")
    status, manifest = _convert("in/w.db")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 0}
    assert _sha256(work / "in" / "w.db") == before


# -- flags: one line naming the flag and the allowed values, exit 2 -----------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "0"], "argument --workers: must be a whole number >= 1, got 0"),
        (["--workers", "-2"], "argument --workers: must be a whole number >= 1, got -2"),
        (["--shards", "0"], "argument --shards: must be a whole number >= 1, got 0"),
        (["--test-every", "1"], "argument --test-every: must be a whole number >= 2 (structures 0, K, 2K, ... are "
                                "test), got 1"),
        (["--test-every", "0"], "argument --test-every: must be a whole number >= 2 (structures 0, K, 2K, ... are "
                                "test), got 0"),
        (["--fractions", "0", "0", "0"],
         "argument --fractions: must be three numbers >= 0 (TRAIN VALID TEST) that sum to 1, got 0 0 0"),
        (["--fractions", "-0.5", "1", "0.5"],
         "argument --fractions: must be three numbers >= 0 (TRAIN VALID TEST) that sum to 1, got -0.5 1 0.5"),
        (["--fractions", "0.5", "0.5", "0.5"],
         "argument --fractions: must be three numbers >= 0 (TRAIN VALID TEST) that sum to 1, got 0.5 0.5 0.5"),
        (["--fractions", "0", "0", "1", "--test-every", "5"],
         "argument --fractions: TRAIN and VALID must not both be 0 with --test-every (the rest of the structures "
         "is split by them), got 0 0 1"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
@pytest.mark.parametrize("command", [prep_water, prep_pdbbind], ids=["water", "pdbbind"])
def test_flag_misuse_is_one_line_and_exit_2(work, capsys, command, flags, message):
    prog = "mpnn-prep-water" if command is prep_water else "mpnn-prep-pdbbind"
    inputs = [str(W5)] if command is prep_water else [str(PDBBIND), "--index", str(GENERAL)]
    assert command.main([*inputs, "-o", "out", *flags]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"{prog}: error: {message}"
    assert not Path("out").exists()


# -- PDBbind: codes match in any case ------------------------------------------------


def _pdbbind_tree(root: Path, rename: dict[str, str], file_case=str.lower) -> Path:
    """A copy of two sample complexes (4yef, in the core set, and 10gs) with directories
    renamed by `rename` and the files' code part in `file_case`."""
    for code in ("4yef", "1k9q"):
        target = root / rename.get(code, code)
        target.mkdir(parents=True)
        for kind in ("ligand.sdf", "pocket.pdb"):
            shutil.copy(PDBBIND / code / f"{code}_{kind}", target / f"{file_case(code)}_{kind}")
    return root


def _record_splits(out: Path) -> dict[str, str]:
    """``{record id: split}`` of the data set in `out` (parsed without TensorFlow)."""
    from mpnn.graph_format.example import Example
    from mpnn.graph_format.manifest import Manifest
    from mpnn.graph_format.tfrecord import read_records

    manifest = Manifest.load(str(out))
    found = {}
    for split in manifest.splits:
        for path in manifest.split(split)[0]:
            for record in read_records(path):
                example = Example.FromString(record)
                found[example.features.feature["record_id"].bytes_list.value[0].decode()] = split
    return found


@pytest.mark.parametrize(
    "rename, file_case",
    [({"4yef": "4YEF"}, str.lower), ({"4yef": "4YEF", "1k9q": "1K9Q"}, str.upper), ({}, str.upper)],
    ids=["upper-case directory", "upper-case directory and files", "upper-case files"],
)
def test_pdbbind_codes_match_in_any_case_and_core_complexes_are_test(work, rename, file_case):
    root = _pdbbind_tree(work / "tree", rename, file_case)
    status = prep_pdbbind.main([
        str(root), "--index", str(GENERAL), "-o", "out", "--cutoff", "4.5", "--quiet", "--shards", "1",
        "--split", "core", "--core-index", str(CORE), "--fractions", "1", "0", "0",
    ])
    assert status == 0
    assert _record_splits(work / "out") == {"4yef": "test", "1k9q": "train"}


def test_pdbbind_the_same_complex_in_two_cases_is_read_once(work):
    root = _pdbbind_tree(work / "tree", {})
    shutil.copytree(root / "4yef", work / "tree2" / "4YEF")
    status = prep_pdbbind.main([
        str(root), str(work / "tree2"), "--index", str(GENERAL), "-o", "out", "--cutoff", "4.5", "--quiet",
        "--shards", "1", "--fractions", "1", "0", "0",
    ])
    assert status == 0
    manifest = json.loads(Path("out/manifest.json").read_text())
    assert manifest["summary"] == {"converted": 2, "skipped": 1}
    assert [(s["source"], s["reason"]) for s in manifest["skipped"]] == [
        (str(work / "tree2" / "4YEF"), f"duplicate complex: 4yef already read from {root / '4yef'}")
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "--index", str(GENERAL)], "PDBbind root nope is not a directory"),
        ([str(PDBBIND), "--index", "nope.dat"], "nope.dat: No such file or directory"),
    ],
    ids=["missing root", "missing index"],
)
def test_pdbbind_missing_inputs_are_one_line_and_exit_1(work, capsys, args, message):
    assert prep_pdbbind.main([*args, "-o", "out", "--quiet"]) == 1
    assert _errors(capsys) == [message]
    assert not Path("out/manifest.json").exists()


# -- no non-finite number reaches a record ------------------------------------------------


def _one_water(comment: str) -> str:
    """An XYZ frame of one water molecule with `comment` as its comment line."""
    return f"3\n{comment}\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"


def _errors(capsys) -> list[str]:
    """The one-line errors a converter command printed (``mpnn-prep-*: error: MESSAGE``)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return [
        line.split(": error: ", 1)[1] for line in err.splitlines() if line.startswith("mpnn-prep-") and ": error: " in line
    ]


@pytest.mark.parametrize("comment", ["inf", "nan", "-inf"])
def test_a_frame_whose_energy_is_not_finite_is_a_skip_never_a_record(work, comment):
    shutil.copy(W5, "in/")
    Path("in/bad.xyz").write_text(_one_water(comment))
    status, manifest = _convert("in")
    assert status == 0
    assert manifest["summary"] == {"converted": 1, "skipped": 1}
    assert _skipped(manifest) == [("in/bad.xyz", f"energy is not finite ({comment})")]
    assert _record_splits(work / "out") == {"w5_lowest.xyz:0": "valid"}
    assert verify.problems("out") == []  # no record with a non-finite value
    assert manifest["warnings"] == []


def test_strict_mode_stops_at_a_non_finite_energy_with_one_line_and_writes_nothing(work, capsys):
    shutil.copy(W5, "in/")
    Path("in/bad.xyz").write_text(_one_water("inf"))
    assert _convert("in", extra=("--strict",)) == (1, None)
    assert _errors(capsys) == ["in/bad.xyz [0]: energy is not finite (inf)"]
    assert list(Path("out").iterdir()) == []


def test_an_energy_beyond_float32_is_refused_by_the_record_writer_as_a_skip(work):
    # Finite as read (float64), infinite as the record's float32: the writer's own check.
    shutil.copy(W5, "in/")
    Path("in/big.xyz").write_text(_one_water("energy=1e39"))
    status, manifest = _convert("in")
    assert status == 0
    assert _skipped(manifest) == [("in/big.xyz", "non-finite 'energy': 1 value(s) of 1 (inf)")]
    assert list(_record_splits(work / "out")) == ["w5_lowest.xyz:0"]


# -- energies in the wrong unit are noticed ----------------------------------------------


def test_energies_in_ev_converted_as_kcal_per_mol_warn_with_the_numbers_and_the_flag(work, caplog):
    lines = W5.read_text().splitlines()
    lines[1] = f"{float(lines[1]) / 23.060548012069493:.6f}"  # -36.805 kcal/mol as eV: -1.596
    Path("in/w5_ev.xyz").write_text("\n".join(lines) + "\n")
    status, manifest = _convert("in")
    expected = (
        "energies average -0.32 kcal/mol per water (min -0.32, max -0.32) read with --energy-unit kcal/mol, outside "
        "every plausible range per water (binding energies -16.0 to -0.5; all-electron total energies -48,300.0 to "
        "-47,500.0; pseudopotential total energies -370.0 to -290.0): are the inputs in eV? With --energy-unit eV they "
        "average -7.36 kcal/mol per water (binding energies)"
    )
    assert status == 0 and manifest["summary"]["converted"] == 1  # a warning, not a failure
    assert manifest["warnings"] == [expected]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [expected]


def test_kcal_per_mol_energies_converted_as_ev_warn_naming_kcal_per_mol(work):
    shutil.copy(W5, "in/")
    status, manifest = _convert("in", extra=("--energy-unit", "eV"))
    assert status == 0
    [warning] = manifest["warnings"]
    assert warning.startswith("energies average -169.75 kcal/mol per water (min -169.75, max -169.75) read with "
                              "--energy-unit eV, outside every plausible range per water (")
    assert warning.endswith("are the inputs in kcal/mol? With --energy-unit kcal/mol they average -7.36 kcal/mol "
                            "per water (binding energies)")


# -- a full disk or a read-only output directory --------------------------------------------


def test_a_full_disk_is_one_line_naming_the_shard_and_leaves_no_file(work, small_filesystem, capsys):
    out = small_filesystem / "out"  # the tutorial file's shards take about 2.4 MB, the file system 1 MiB
    assert prep_water.main([str(TUTORIAL_FILE), "-o", str(out), "--shards", "1", "--quiet"]) == 1
    [error] = _errors(capsys)
    assert re.fullmatch(rf"cannot write {out}/(train|valid|test)-00000-of-00001.tfrecord.gz: No space left on device",
                        error), error
    assert list(out.iterdir()) == []  # no shard, no temporary file, no manifest


def test_a_read_only_output_directory_is_one_line_naming_the_shard(work, read_only_view, capsys):
    (work / "ro").mkdir()
    out = read_only_view(work / "ro")
    assert prep_water.main([str(W5), "-o", str(out), "--shards", "1", "--quiet"]) == 1
    assert _errors(capsys) == [f"cannot write {out}/valid-00000-of-00001.tfrecord.gz: Read-only file system"]
    assert list(out.iterdir()) == []


# -- PDBbind: every entry passed over is listed ---------------------------------------------


def test_pdbbind_an_empty_complex_directory_and_other_entries_are_listed_as_skips(work):
    root = _pdbbind_tree(work / "tree", {})
    (root / "9xyz").mkdir()  # named like a complex, empty
    (root / "readme").mkdir()
    (root / "NOTES.txt").write_text("notes\n")
    status = prep_pdbbind.main([
        str(root), "--index", str(GENERAL), "-o", "out", "--cutoff", "4.5", "--quiet", "--shards", "1",
        "--fractions", "1", "0", "0",
    ])
    assert status == 0
    manifest = json.loads(Path("out/manifest.json").read_text())
    assert manifest["summary"] == {"converted": 2, "skipped": 3}
    assert _skipped(manifest) == [
        (str(root / "9xyz"), "empty complex directory"),
        (str(root / "NOTES.txt"), "not a complex directory: a file"),
        (str(root / "readme"), "not a complex directory: name is not a PDB code"),
    ]
