"""TFRecord files written and read without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little endian) | uint32 masked crc32c of the length bytes
    | length bytes of data        | uint32 masked crc32c of the data

optionally inside one GZIP stream (``compression="GZIP"``, TensorFlow's name). Conversion
workers write their shards with `ShardWriter` so they never import TensorFlow (about 2.3 s
of CPU per process). Uncompressed files are byte for byte what ``tf.io.TFRecordWriter``
writes; GZIP files differ from TensorFlow's only in the gzip container (Python's gzip,
level 6, mtime 0), and ``tf.data.TFRecordDataset`` reads both
(tests/mpnn/test_graph_format.py checks it).

CRC32C comes from the ``crc32c`` package (hardware-accelerated, well kept): a pure-Python
CRC would cost more than the conversion itself.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import crc32c

from mpnn import atomic

COMPRESSIONS = {"GZIP": ".gz", "none": ""}
GZIP_LEVEL = 6
# Framed records are collected up to this many bytes before they go to the file (or gzip):
# one zlib call per small record costs about a fifth of a tutorial record's conversion.
_BUFFER_BYTES = 1 << 20
_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


# What reading a gzip stream that is cut short or damaged raises.
_STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


class TFRecordError(ValueError):
    """A TFRecord file that cannot be read: ``"<path>: <problem>"``.

    Attributes:
        path: the file.
        record: 0-based number of the first record that cannot be read.
        kind: ``"length CRC"`` or ``"data CRC"`` (a mismatch: corrupt), ``"header cut"``
            or ``"data cut"`` (the file ends inside the record: truncated), or
            ``"compressed stream"`` (a damaged or cut GZIP stream).
        problem: the message without the path (what `mpnn.verify` prints after it).
    """

    _PROBLEMS = {
        "length CRC": "corrupt record {record} (length CRC mismatch)",
        "data CRC": "corrupt record {record} (data CRC mismatch)",
        "header cut": "truncated at record {record} (header cut short)",
        "data cut": "truncated at record {record} (data cut short)",
        "compressed stream": "corrupt or truncated compressed stream at record {record} ({detail})",
    }

    def __init__(self, path: str, record: int, kind: str, detail: str = "") -> None:
        self.path, self.record, self.kind = path, record, kind
        self.problem = self._PROBLEMS[kind].format(record=record, detail=detail)
        super().__init__(f"{path}: {self.problem}")


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C of `data`."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record with its TFRecord framing."""
    length = _LENGTH.pack(len(record))
    return b"".join((length, _CRC.pack(masked_crc(length)), record, _CRC.pack(masked_crc(record))))


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard: its file name (no directory), records, size in bytes and sha256."""

    file: str
    records: int
    bytes: int
    sha256: str


class _HashingFile:
    """A write-only file that counts and hashes the bytes written through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


class ShardWriter:
    """Writes one TFRecord file at `path`, under a temporary name renamed by `close`, so
    that a reader never sees a half-written shard.

    Use as a context manager, or call `close` (which returns the `ShardInfo`). An exception
    inside the ``with`` block removes the temporary file. A write that fails (a full disk)
    raises `mpnn.atomic.WriteError` naming the shard and the cause; the shard is then not
    there under its name (call `abort` to remove its temporary file).
    """

    def __init__(self, path: str, compression: str = "GZIP") -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {list(COMPRESSIONS)}, got {compression!r}")
        self.path = path
        self.records = 0
        self._buffer = bytearray()
        self._tmp = atomic.temporary_path(path)
        with atomic.naming(path):
            self._file = open(self._tmp, "wb")
        self._hashing = _HashingFile(self._file)
        self._stream: BinaryIO | _HashingFile = self._hashing
        if compression == "GZIP":
            # No file name and mtime 0 in the header: the same records give the same bytes.
            self._stream = gzip.GzipFile(
                filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=self._hashing, mtime=0
            )

    def write(self, record: bytes) -> None:
        self._buffer += frame(record)
        self.records += 1
        if len(self._buffer) >= _BUFFER_BYTES:
            with atomic.naming(self.path):
                self._stream.write(self._buffer)
            self._buffer.clear()

    def close(self) -> ShardInfo:
        with atomic.naming(self.path):
            self._stream.write(self._buffer)
            self._buffer.clear()
            if self._stream is not self._hashing:
                self._stream.close()  # writes the gzip trailer; leaves the underlying file open
            self._file.close()
            atomic.commit(self._tmp, self.path)
        digest = self._hashing.digest.hexdigest()
        return ShardInfo(os.path.basename(self.path), self.records, self._hashing.size, digest)

    def abort(self) -> None:
        """Drop the shard: close and remove the temporary file."""
        with contextlib.suppress(OSError):  # buffered bytes a full disk does not take
            self._file.close()
        atomic.discard(self._tmp)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def compression_of(path: str) -> str:
    """``"GZIP"`` for a ``.gz`` file name, else ``"none"``."""
    return "GZIP" if path.endswith(".gz") else "none"


def read_records(path: str, compression: str | None = None, skip: int = 0) -> Iterator[bytes]:
    """The records of the TFRecord file `path`, in order, CRCs checked, after skipping the
    first `skip` (whose data is read past without a CRC check; a GZIP stream cannot be
    entered in the middle, so skipping still decompresses them).

    Args:
        compression: ``"GZIP"`` or ``"none"``; None: from the file name (`compression_of`).

    Raises:
        TFRecordError: a truncated file, a damaged GZIP stream or a CRC mismatch (naming
            the file, the record and the kind of damage).
        OSError: the file cannot be opened.
    """
    compression = compression or compression_of(path)
    opener = gzip.open if compression == "GZIP" else open
    with opener(path, "rb") as handle:
        index = 0
        while True:
            try:
                header = handle.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise TFRecordError(path, index, "header cut")
                length_bytes, length_crc = header[:8], _CRC.unpack(header[8:])[0]
                if masked_crc(length_bytes) != length_crc:
                    raise TFRecordError(path, index, "length CRC")
                (length,) = _LENGTH.unpack(length_bytes)
                if index < skip:
                    handle.seek(length + 4, os.SEEK_CUR)
                    index += 1
                    continue
                data, data_crc = handle.read(length), handle.read(4)
            except _STREAM_ERRORS as exc:
                raise TFRecordError(path, index, "compressed stream", str(exc)) from exc
            if len(data) < length or len(data_crc) < 4:
                raise TFRecordError(path, index, "data cut")
            if masked_crc(data) != _CRC.unpack(data_crc)[0]:
                raise TFRecordError(path, index, "data CRC")
            yield data
            index += 1


def check_records(path: str, compression: str | None = None) -> int:
    """Number of records in `path`, every length and data CRC checked (the whole file is
    read). Raises as `read_records`."""
    return sum(1 for _ in read_records(path, compression))


def count_records(path: str, compression: str | None = None) -> int:
    """Number of records in `path`, reading only the length fields (and, for GZIP,
    decompressing the whole stream). Raises as `read_records` (length CRCs only)."""
    compression = compression or compression_of(path)
    opener = gzip.open if compression == "GZIP" else open
    count = 0
    with opener(path, "rb") as handle:
        while True:
            try:
                header = handle.read(12)
                if not header:
                    return count
                if len(header) < 12:
                    raise TFRecordError(path, count, "header cut")
                if masked_crc(header[:8]) != _CRC.unpack(header[8:])[0]:
                    raise TFRecordError(path, count, "length CRC")
                (length,) = _LENGTH.unpack(header[:8])
                handle.seek(length + 4, os.SEEK_CUR)
            except _STREAM_ERRORS as exc:
                raise TFRecordError(path, count, "compressed stream", str(exc)) from exc
            count += 1


def sha256_of(path: str) -> str:
    """Hex sha256 of the bytes of `path` (as stored: compressed for GZIP shards)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
