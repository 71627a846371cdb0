"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

Each write goes to a temporary file beside the target (``<path>.tmp-<pid>``, same
directory, so the same file system) and is renamed over the target with `os.replace`
only once complete; a write that fails or is interrupted by an exception leaves the target
as it was and removes the temporary file. This protects against a killed process (a
scheduler's SIGKILL at the wall-time limit), not against the machine losing power: no
fsync, which would slow the shard writers down for little gain here.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Iterator

TMP_INFIX = ".tmp-"


def temporary_path(path: str | os.PathLike) -> str:
    """The temporary name `path` is written under (beside it, this process's own)."""
    return f"{os.fspath(path)}{TMP_INFIX}{os.getpid()}"


def commit(tmp: str, path: str | os.PathLike) -> None:
    """Put the complete temporary file `tmp` in place of `path` (one rename)."""
    os.replace(tmp, path)


def discard(tmp: str) -> None:
    """Remove the temporary file `tmp` of a write that did not finish (if it exists)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write; on success it is renamed to `path`.

    For writers that take a path (``tf.io.TFRecordWriter``); see `atomic_open` for a
    file handle, and `temporary_path` / `commit` / `discard` for a writer whose lifetime
    is not one block (`mpnn.graph_format.tfrecord.ShardWriter`).
    """
    tmp = temporary_path(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        discard(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """`open(path, mode)` for writing (``"w"`` or ``"wb"``), replacing `path` atomically
    when the block ends without an exception."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    with replacing(path) as tmp, open(tmp, mode, **open_kwargs) as handle:
        yield handle


def write_json(path: str | os.PathLike, content: Any) -> None:
    """Write `content` as indented JSON (values JSON does not know as `str`), atomically."""
    with atomic_open(path) as handle:
        json.dump(content, handle, indent=1, default=str)
        handle.write("\n")
