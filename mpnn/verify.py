"""``mpnn-verify DIR``: check a prepared data set's shards against its manifest.

For every shard ``manifest.json`` lists, reports (one line each, naming the file):

- a missing or unreadable file;
- a byte size that differs from the manifest's ``bytes``;
- a truncated or corrupt file: every record is read and its length and data checked
  against their CRC-32C (`mpnn.graph_format.tfrecord.read_records`), so the message names
  the record (0-based) where the damage starts and its kind; for GZIP shards, a damaged
  compressed stream too;
- a record count that differs from the manifest's;
- a sha256 that differs from the manifest's ``sha256`` while the records themselves read
  correctly (a shard replaced by another valid one). Damage found in the records is the
  more specific answer, so the sha256 mismatch it implies is not reported beside it;
- records holding a NaN or infinite float value (any float feature), by record number
  (0-based) and feature, beside any other problem of the shard.

Exit status 0 when all is well, 1 when anything is wrong (or the manifest cannot be read).

`check_shards` is the cheap part (existence and sizes, no reading) that training and
evaluation run before they start; `problems` is the full check, which they also run to
name the shard behind a TensorFlow data error. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

from mpnn.errors import InputError, UsageError, require_path
from mpnn.graph_format.example import nonfinite_features
from mpnn.graph_format.manifest import MANIFEST_NAME, Manifest, ManifestError, Shard
from mpnn.graph_format.tfrecord import TFRecordError, read_records, sha256_of

__all__ = ["MANIFEST_NAME", "ShardError", "check_shards", "problems", "shard_problems", "check_data_path"]


class ShardError(InputError):
    """Shards that do not match their manifest (the message names each file and problem)."""


def _load(data: str) -> Manifest:
    """The manifest of `data` (directory or file), not validated; `ShardError` naming the
    file when it cannot be read."""
    try:
        return Manifest.load(data, validate=False)
    except ManifestError as exc:
        raise ShardError(str(exc)) from exc


def _shards(manifest: Manifest, splits: Iterable[str] | None) -> Iterator[tuple[str, Shard]]:
    """``(path, shard)`` of every shard of `splits` (None: all)."""
    for name, split in manifest.splits.items():
        if splits is None or name in splits:
            for shard in split.shards:
                yield os.path.join(manifest.directory, shard.file), shard


def _presence_problems(path: str, shard: Shard) -> list[str]:
    """A missing file, or an empty one where the manifest counts records (one stat)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return [f"{path}: missing (the manifest lists it with {shard.records} records)"]
    if size == 0 and shard.records > 0:
        return [f"{path}: empty file, the manifest says {shard.records} records"]
    return []


def _size_problem(path: str, shard: Shard) -> list[str]:
    """A byte size that differs from the manifest's (when it records one)."""
    size = os.path.getsize(path)
    if shard.bytes is not None and size != shard.bytes:
        return [f"{path}: {size} bytes, the manifest says {shard.bytes} (truncated or replaced)"]
    return []


def _size_problems(path: str, shard: Shard) -> list[str]:
    """`_presence_problems`, then `_size_problem` (cheap: no file is read)."""
    return _presence_problems(path, shard) or _size_problem(path, shard)


def check_shards(manifest_dir: str, splits: Iterable[str]) -> None:
    """Before training or evaluation: every shard of `splits` exists and has the byte size
    the manifest records (files are not read).

    Raises:
        ShardError: naming each missing or wrongly sized shard (``; ``-separated).
    """
    manifest = _load(manifest_dir)
    found = [p for path, shard in _shards(manifest, set(splits)) for p in _size_problems(path, shard)]
    if found:
        raise ShardError("; ".join(found) + f" (run mpnn-verify {manifest.directory})")


def shard_problems(path: str, shard: Shard, compression: str) -> list[str]:
    """What is wrong with one shard, as the most specific single line (see the module
    docstring): missing or empty; else damaged records (framing, CRCs, GZIP stream); else
    a record count, then a byte size, then a sha256 that differs from the manifest's; and
    beside it, a line naming the records that hold non-finite float values."""
    found = _presence_problems(path, shard)
    if found:
        return found
    try:
        records, nonfinite = _read_checked(path, compression)
    except TFRecordError as exc:
        return [f"{path}: {exc.problem}"]
    except OSError as exc:
        return [f"{path}: unreadable: {exc}"]
    if records != shard.records:
        found = [f"{path}: {records} records, the manifest says {shard.records}"]
    else:
        found = _size_problem(path, shard)
    if not found and shard.sha256 is not None and sha256_of(path) != shard.sha256:
        found = [f"{path}: sha256 differs from the manifest's (the file was changed)"]
    if nonfinite:
        shown = ", ".join(nonfinite[:NONFINITE_SHOWN]) + (" ..." if len(nonfinite) > NONFINITE_SHOWN else "")
        found.append(f"{path}: non-finite float values in {len(nonfinite)} record(s): {shown}")
    return found


# Records with non-finite values named per shard (the count covers them all).
NONFINITE_SHOWN = 10


def _read_checked(path: str, compression: str) -> tuple[int, list[str]]:
    """The records in `path` (every CRC checked; raises as `read_records`) and, for each
    one holding a NaN or infinite float value, ``"record N ('feature', ...)"``."""
    count, nonfinite = 0, []
    for count, record in enumerate(read_records(path, compression), start=1):
        names = nonfinite_features(record)
        if names:
            nonfinite.append(f"record {count - 1} ({', '.join(map(repr, names))})")
    return count, nonfinite


def problems(data: str, splits: Iterable[str] | None = None) -> list[str]:
    """One line per problem of the shards of `splits` (None: every split) of the data set
    `data` (its directory or ``manifest.json``); empty when all is well."""
    try:
        manifest = _load(data)
    except ShardError as exc:
        return [str(exc)]
    found = [
        f"{manifest.path}: no split {name!r} (has {sorted(manifest.splits)})"
        for name in splits or ()
        if name not in manifest.splits
    ]
    try:
        manifest.validate()
    except ManifestError as exc:
        found.append(str(exc))
    for path, shard in _shards(manifest, splits):
        found += shard_problems(path, shard, manifest.compression)
    return found


def check_data_path(path: str) -> None:
    """`path` is a ``manifest.json`` or a directory holding one; `InputError` otherwise."""
    if not path:
        raise UsageError("argument --data: required (a prepared data set: its directory or manifest.json)")
    require_path(path, "--data", "a prepared data set")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        raise InputError(
            f"{path}: no {MANIFEST_NAME}, not a prepared data set (make one with mpnn-prep-water "
            "or mpnn-prep-pdbbind)"
        )


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m mpnn.verify: the command is mpnn-verify (or python -m mpnn.cli.verify)")
