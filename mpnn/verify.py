"""``mpnn-verify DIR``: check a prepared data set's shards against its manifest.

For every shard ``manifest.json`` lists, reports (one line each, naming the file):

- a missing or unreadable file;
- a byte size or sha256 that differs from the manifest's ``bytes`` / ``sha256`` (when the
  shard entry records them; older manifests do not);
- a truncated or corrupt file: the TFRecord framing is read record by record and each
  length and record is checked against its CRC-32C, so the message names the record
  (0-based) where the damage starts; for GZIP shards, a damaged compressed stream too;
- a record count that differs from the manifest's.

Exit status 0 when all is well, 1 when anything is wrong (or the manifest cannot be read).

`check_shards` is the cheap part (existence and sizes, no reading) that training and
evaluation run before they start; `problems` is the full check, which they also run to
name the shard behind a TensorFlow data error.

The reader is written here rather than taken from TensorFlow: `tf.data.TFRecordDataset`
reports damage as "corrupted record at <byte offset>" without the file, and importing
TensorFlow costs seconds; the format (``uint64 length, uint32 masked CRC-32C of the
length, data, uint32 masked CRC-32C of the data``, little-endian) is small and stable.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import struct
import sys
import zlib
from typing import IO, Any, Iterable, Sequence

import crc32c

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length
_FOOTER = struct.Struct("<I")  # masked CRC of the data
# A gzip stream that is cut short or damaged raises one of these while it is read.
_STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)


class ShardError(RuntimeError):
    """Shards that do not match their manifest (the message names each file and problem)."""


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data` (rotated right by 15 bits, plus a constant)."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def count_records(handle: IO[bytes]) -> int:
    """Records in the (decompressed) TFRecord stream `handle`, checking every CRC.

    Raises:
        ValueError: naming the record (0-based) where the stream is truncated or corrupt.
    """
    index = 0
    while True:
        try:
            header = handle.read(_HEADER.size)
            if not header:
                return index
            if len(header) < _HEADER.size:
                raise ValueError(f"truncated at record {index} (header cut short)")
            length, length_crc = _HEADER.unpack(header)
            if masked_crc(header[:8]) != length_crc:
                raise ValueError(f"corrupt record {index} (length CRC mismatch)")
            data = handle.read(length)
            footer = handle.read(_FOOTER.size)
        except _STREAM_ERRORS as exc:
            raise ValueError(f"corrupt or truncated compressed stream at record {index} ({exc})") from exc
        if len(data) < length or len(footer) < _FOOTER.size:
            raise ValueError(f"truncated at record {index} (data cut short)")
        if masked_crc(data) != _FOOTER.unpack(footer)[0]:
            raise ValueError(f"corrupt record {index} (data CRC mismatch)")
        index += 1


def _open_records(path: str, compression: str) -> IO[bytes]:
    return gzip.open(path, "rb") if compression == "GZIP" else open(path, "rb")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: str) -> tuple[str, dict[str, Any]]:
    """``(manifest path, content)`` of a data set directory or manifest file.

    Raises:
        ShardError: the manifest is missing, not JSON, or has no ``splits`` section.
    """
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST_NAME)
    try:
        with open(path) as handle:
            content = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: cannot read manifest: {exc}") from exc
    if not isinstance(content, dict) or not isinstance(content.get("splits"), dict):
        raise ShardError(f"{path}: manifest has no 'splits' section")
    return path, content


def _entries(manifest_path: str, content: dict[str, Any], splits: Iterable[str] | None):
    """``(split, shard path, entry)`` of every shard of `splits` (None: all), after checking
    that the entries have the keys we read."""
    directory = os.path.dirname(os.path.abspath(manifest_path))
    for split, section in content["splits"].items():
        if splits is not None and split not in splits:
            continue
        for number, entry in enumerate(section.get("shards", [])):
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not isinstance(
                entry.get("records"), int
            ):
                raise ShardError(f"{manifest_path}: split {split!r} shard entry {number} is malformed: {entry!r}")
            yield split, os.path.join(directory, entry["file"]), entry


def _size_problems(path: str, entry: dict[str, Any]) -> list[str]:
    """A missing file, or a byte size that differs from the manifest's (cheap: one stat)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return [f"{path}: missing (the manifest lists it with {entry['records']} records)"]
    if "bytes" in entry and size != entry["bytes"]:
        return [f"{path}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)"]
    if size == 0 and entry["records"] > 0:
        return [f"{path}: empty file, the manifest says {entry['records']} records"]
    return []


def check_shards(manifest_dir: str, splits: Iterable[str]) -> None:
    """Before training or evaluation: every shard of `splits` exists and has the byte size
    the manifest records (files are not read).

    Raises:
        ShardError: naming each missing or wrongly sized shard (``; ``-separated).
    """
    manifest_path, content = load_manifest(manifest_dir)
    found = [p for _, path, entry in _entries(manifest_path, content, set(splits)) for p in _size_problems(path, entry)]
    if found:
        raise ShardError("; ".join(found) + f" (run mpnn-verify {os.path.dirname(manifest_path) or '.'})")


def shard_problems(path: str, entry: dict[str, Any], compression: str) -> list[str]:
    """Everything wrong with one shard: existence, size, sha256, framing, CRCs, count."""
    found = _size_problems(path, entry)
    if found:
        return found
    if "sha256" in entry and sha256_of(path) != entry["sha256"]:
        found.append(f"{path}: sha256 differs from the manifest's (the file was changed)")
    try:
        with _open_records(path, compression) as handle:
            records = count_records(handle)
    except ValueError as exc:
        return [*found, f"{path}: {exc}"]
    except OSError as exc:
        return [*found, f"{path}: unreadable: {exc}"]
    if records != entry["records"]:
        found.append(f"{path}: {records} records, the manifest says {entry['records']}")
    return found


def problems(data: str, splits: Iterable[str] | None = None) -> list[str]:
    """One line per problem of the shards of `splits` (None: every split) of the data set
    `data` (its directory or ``manifest.json``); empty when all is well."""
    try:
        manifest_path, content = load_manifest(data)
        compression = content.get("compression", "GZIP")
        found = [
            f"{manifest_path}: no split {name!r} (has {sorted(content['splits'])})"
            for name in splits or ()
            if name not in content["splits"]
        ]
        for split, section in content["splits"].items():
            if splits is not None and split not in splits:
                continue
            listed = sum(e.get("records", 0) for e in section.get("shards", []) if isinstance(e, dict))
            if "records" in section and section["records"] != listed:
                found.append(
                    f"{manifest_path}: split {split!r} counts {section['records']} records, its shards {listed}"
                )
        for _, path, entry in _entries(manifest_path, content, splits):
            found += shard_problems(path, entry, compression)
    except ShardError as exc:
        return [str(exc)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """``mpnn-verify``: check every shard of a prepared data set against its manifest."""
    parser = argparse.ArgumentParser(prog="mpnn-verify", description=main.__doc__)
    parser.add_argument("data", help="prepared data set (its directory or manifest.json)")
    parser.add_argument("--split", action="append", help="check only this split (repeatable; default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    found = problems(args.data, args.split)
    for line in found:
        print(line)
    if not found:
        log.info("%s: every shard matches the manifest", args.data)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
