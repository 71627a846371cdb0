"""mpnn-verify and the shard checks: each damaged data set gets exactly its expected answer."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from mpnn import verify
from mpnn.cli import verify as verify_cli
from mpnn.graph_format.tfrecord import check_records, sha256_of
from tests.helpers import WATER, poison_energies

SHARD = "train-00001-of-00002.tfrecord.gz"


@pytest.fixture(scope="module")
def minima_dataset(tmp_path_factory) -> Path:
    """The 28 water minima, 2 shards per split (train 14 records, 7 per shard)."""
    from mpnn.cli.prep_water import main

    out = tmp_path_factory.mktemp("minima")
    assert main([str(WATER / "minima"), "-o", str(out), "--shards", "2", "--fractions", "0.5", "0.25", "0.25",
                 "--quiet"]) == 0
    return out


@pytest.fixture
def dataset(minima_dataset, tmp_path) -> Path:
    """A copy of `minima_dataset` to damage."""
    return Path(shutil.copytree(minima_dataset, tmp_path / "data"))


def _edit_manifest(data: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((data / "manifest.json").read_text())
    edit(manifest)
    (data / "manifest.json").write_text(json.dumps(manifest))


def _shard_entry(manifest: dict, name: str = SHARD) -> dict:
    return next(e for e in manifest["splits"]["train"]["shards"] if e["file"] == name)


def _flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _rewrite_uncompressed(path: Path, edit: Callable[[bytes], bytes]) -> None:
    """Decompress the shard, `edit` the TFRecord bytes, compress again (a valid gzip
    stream around damaged records)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    with gzip.open(path, "wb") as handle:
        handle.write(edit(raw))


def _record_sizes(path: Path) -> list[int]:
    """The framed size (header + data + footer) of each record of a gzip shard."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    sizes, offset = [], 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset : offset + 8], "little")
        sizes.append(16 + length)
        offset += 16 + length
    return sizes


def _corrupt_record_data(record: int) -> Callable[[bytes], bytes]:
    def edit(raw: bytes) -> bytes:
        offset = 0
        for _ in range(record):
            offset += 16 + int.from_bytes(raw[offset : offset + 8], "little")
        data = bytearray(raw)
        data[offset + 12 + 3] ^= 0x01  # a byte of the record's data
        return bytes(data)

    return edit


def _drop_tail(raw: bytes) -> bytes:
    return raw[:-10]  # the last record loses its end


def _corrupt_length(raw: bytes) -> bytes:
    data = bytearray(raw)
    data[0] ^= 0x01  # record 0's length
    return bytes(data)


def _count_one_more(manifest: dict) -> None:
    """The damaged shard's entry (and its split's total) counts 8 records; it holds 7."""
    _shard_entry(manifest).update(records=8)
    manifest["splits"]["train"].update(records=15)


# Each damage, and the one problem line it must give (`{shard}`: the damaged file's path).
CORPUS: dict[str, tuple[Callable[[Path], None], str]] = {
    "shard deleted": (lambda d: (d / SHARD).unlink(), "{shard}: missing (the manifest lists it with 7 records)"),
    "shard emptied (0 bytes)": (
        lambda d: (d / SHARD).write_bytes(b""), "{shard}: empty file, the manifest says 7 records"
    ),
    "shard truncated (gzip cut)": (
        lambda d: _truncate(d / SHARD, 0.5),
        "{shard}: corrupt or truncated compressed stream at record 3 (Compressed file ended before the "
        "end-of-stream marker was reached)",
    ),
    "byte flipped in the gzip stream": (
        lambda d: _flip_byte(d / SHARD),
        # Not also "sha256 differs" (the manifest records it): the damaged record is the
        # more specific answer.
        "{shard}: corrupt record 3 (data CRC mismatch)",
    ),
    "record data corrupt (valid gzip)": (
        lambda d: _rewrite_uncompressed(d / SHARD, _corrupt_record_data(2)),
        "{shard}: corrupt record 2 (data CRC mismatch)",
    ),
    "record length corrupt (valid gzip)": (
        lambda d: _rewrite_uncompressed(d / SHARD, _corrupt_length),
        "{shard}: corrupt record 0 (length CRC mismatch)",
    ),
    "last record cut (valid gzip)": (
        lambda d: _rewrite_uncompressed(d / SHARD, _drop_tail),
        "{shard}: truncated at record 6 (data cut short)",
    ),
    "header cut (valid gzip)": (
        lambda d: _rewrite_uncompressed(d / SHARD, lambda raw: raw + b"\x01\x02\x03"),
        "{shard}: truncated at record 7 (header cut short)",
    ),
    "empty gzip stream, manifest counts 7": (
        lambda d: _rewrite_uncompressed(d / SHARD, lambda raw: b""),
        "{shard}: 0 records, the manifest says 7",
    ),
    "manifest counts one record too many": (
        lambda d: _edit_manifest(d, _count_one_more),
        "{shard}: 7 records, the manifest says 8",
    ),
    "not gzip at all": (
        lambda d: (d / SHARD).write_bytes(b"this is not a shard\n" * 5),
        "{shard}: corrupt or truncated compressed stream at record 0 (Not a gzipped file (b'th'))",
    ),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_each_damaged_shard_is_reported_once_by_name(dataset, case):
    damage, expected = CORPUS[case]
    damage(dataset)
    shard = os.path.abspath(dataset / SHARD)
    assert verify.problems(str(dataset)) == [expected.format(shard=shard)]
    assert verify_cli.main([str(dataset)]) == 1


def test_an_intact_data_set_has_no_problems(dataset, capsys):
    assert verify.problems(str(dataset)) == []
    assert verify_cli.main([str(dataset / "manifest.json")]) == 0
    assert capsys.readouterr().out == ""


def _recompress_with_mtime(path: Path) -> None:
    """The same records in a gzip stream of the same size whose header differs (mtime)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    with open(path, "wb") as file, gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=file,
                                                 mtime=12345) as stream:
        stream.write(raw)


def test_recorded_bytes_and_sha256_are_checked(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert set(_shard_entry(manifest)) == {"file", "records", "bytes", "sha256"}  # the converter records them
    assert verify.problems(str(dataset)) == []
    shard = dataset / SHARD
    size = shard.stat().st_size
    _recompress_with_mtime(shard)  # intact records, same size, other bytes
    assert shard.stat().st_size == size
    assert verify.problems(str(dataset)) == [
        f"{os.path.abspath(shard)}: sha256 differs from the manifest's (the file was changed)"
    ]
    _rewrite_uncompressed(shard, lambda raw: raw)  # intact records, another size
    assert verify.problems(str(dataset)) == [
        f"{os.path.abspath(shard)}: {shard.stat().st_size} bytes, the manifest says {size} (truncated or replaced)"
    ]
    data = bytearray(shard.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32: the records read, the stream's own check fails at its end
    shard.write_bytes(bytes(data))
    [line] = verify.problems(str(dataset))
    assert line.startswith(f"{os.path.abspath(shard)}: corrupt or truncated compressed stream at record 7 (CRC check")


def test_a_split_total_that_disagrees_with_its_shards_is_reported(dataset):
    _edit_manifest(dataset, lambda m: m["splits"]["valid"].update(records=99))
    assert verify.problems(str(dataset)) == [
        f"{dataset / 'manifest.json'}: split 'valid' lists 99 records, its shards 6"
    ]


@pytest.mark.parametrize(
    "manifest_text, expected",
    [
        (None, "cannot read manifest: [Errno 2] No such file or directory"),
        ("{not json", "cannot read manifest: Expecting property name"),
        ('{"splits": []}', "manifest has no 'schema_version', 'kind', 'target', 'features', 'vocab' section"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_an_unreadable_manifest_is_one_line_naming_it(tmp_path, manifest_text, expected):
    if manifest_text is not None:
        (tmp_path / "manifest.json").write_text(manifest_text)
    [line] = verify.problems(str(tmp_path))
    assert line.startswith(f"{tmp_path / 'manifest.json'}: {expected}")
    assert verify_cli.main([str(tmp_path)]) == 1


def test_only_the_named_splits_are_checked(dataset):
    (dataset / SHARD).unlink()
    assert verify.problems(str(dataset), ["valid", "test"]) == []
    assert verify.problems(str(dataset), ["nope"]) == [
        f"{dataset / 'manifest.json'}: no split 'nope' (has ['test', 'train', 'valid'])"
    ]


def test_check_shards_reads_no_file_but_catches_missing_and_resized_ones(dataset):
    verify.check_shards(str(dataset), ["train", "valid", "test"])
    _flip_byte(dataset / SHARD)  # content damage: not its job (the loader's guard catches it)
    verify.check_shards(str(dataset), ["train"])
    (dataset / SHARD).write_bytes(b"")
    with pytest.raises(verify.ShardError, match=f"{SHARD}: empty file, the manifest says 7 records"):
        verify.check_shards(str(dataset), ["train"])
    verify.check_shards(str(dataset), ["valid", "test"])
    (dataset / "valid-00000-of-00002.tfrecord.gz").write_bytes(b"x")
    with pytest.raises(verify.ShardError, match=r"valid-00000-of-00002.tfrecord.gz: 1 bytes, the manifest says \d+"):
        verify.check_shards(str(dataset), ["valid"])


def test_record_framing_is_read_as_tensorflow_writes_it(dataset):
    """The reader agrees with TensorFlow on an intact shard (counts and record sizes)."""
    import tensorflow as tf

    shard = dataset / SHARD
    records = list(tf.data.TFRecordDataset(str(shard), compression_type="GZIP").as_numpy_iterator())
    assert _record_sizes(shard) == [16 + len(r) for r in records]
    assert check_records(str(shard)) == len(records) == 7


def test_records_with_non_finite_values_are_named_by_shard_and_record(dataset, capsys):
    shard = dataset / SHARD
    poison_energies(shard, {2, 5})
    _edit_manifest(dataset, lambda m: _shard_entry(m).update(bytes=shard.stat().st_size, sha256=sha256_of(str(shard))))
    line = f"{os.path.abspath(shard)}: non-finite float values in 2 record(s): record 2 ('energy'), record 5 ('energy')"
    assert verify.problems(str(dataset)) == [line]
    assert verify_cli.main([str(dataset)]) == 1
    assert capsys.readouterr().out.splitlines() == [line]


def test_a_non_finite_record_is_named_beside_the_shards_other_damage(dataset):
    shard = dataset / SHARD
    poison_energies(shard, {0})  # and the manifest's size and sha256 no longer match
    assert verify.problems(str(dataset)) == [
        f"{os.path.abspath(shard)}: {shard.stat().st_size} bytes, the manifest says "
        f"{_shard_entry(json.loads((dataset / 'manifest.json').read_text()))['bytes']} (truncated or replaced)",
        f"{os.path.abspath(shard)}: non-finite float values in 1 record(s): record 0 ('energy')",
    ]
