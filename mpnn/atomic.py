"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

Each write goes to a temporary file beside the target (``<path>.tmp-<pid>``, same
directory, so the same file system) and is renamed over the target with `os.replace`
only once complete; a write that fails or is interrupted by an exception leaves the target
as it was and removes the temporary file. This protects against a killed process (a
scheduler's SIGKILL at the wall-time limit), not against the machine losing power: no
fsync, which would slow the shard writers down for little gain here.

A write that fails with an `OSError` (a full disk, a read-only file system, a quota) raises
`WriteError`, whose message names the file meant (not its temporary name) and the cause.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Iterator
from mpnn.errors import UserError

TMP_INFIX = ".tmp-"


class WriteError(UserError, OSError):
    """A file that could not be written: ``"cannot write <path>: <cause>"`` (e.g. ``No space
    left on device``, ``Read-only file system``); `errno` is the cause's.

    Attributes:
        path: the file meant (its final name).
        cause: the reason, e.g. the `OSError`'s ``strerror``.
    """

    def __init__(self, path: str | os.PathLike, cause: str, errno: int | None = None) -> None:
        super().__init__(errno, f"cannot write {os.fspath(path)}: {cause}")
        self.path, self.cause = os.fspath(path), cause

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # pickled as its arguments (conversion workers send it back)
        return type(self), (self.path, self.cause, self.errno)

    @classmethod
    def of(cls, path: str | os.PathLike, exc: BaseException) -> "WriteError":
        """The `WriteError` of writing `path` that failed with `exc` (kept if it is one)."""
        if isinstance(exc, WriteError):
            return exc
        errno, text = getattr(exc, "errno", None), str(exc).strip()
        cause = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
        return cls(path, cause, errno if isinstance(errno, int) else None)


@contextlib.contextmanager
def naming(path: str | os.PathLike, errors: tuple[type[BaseException], ...] = (OSError,)) -> Iterator[None]:
    """Turn `errors` raised inside the block into `WriteError` naming `path`."""
    try:
        yield
    except errors as exc:
        raise WriteError.of(path, exc) from exc


def temporary_path(path: str | os.PathLike, keep_suffix: bool = False) -> str:
    """The temporary name `path` is written under (beside it, this process's own):
    ``<path>.tmp-<pid>``, or with `keep_suffix` ``<dir>/.tmp-<pid>-<name>``, which still
    ends as `path` does (for writers that choose the format by the name, e.g. Keras'
    ``.weights.h5`` and ``.keras``)."""
    if keep_suffix:
        directory, name = os.path.split(os.fspath(path))
        return os.path.join(directory, f"{TMP_INFIX}{os.getpid()}-{name}")
    return f"{os.fspath(path)}{TMP_INFIX}{os.getpid()}"


def commit(tmp: str, path: str | os.PathLike) -> None:
    """Put the complete temporary file `tmp` in place of `path` (one rename)."""
    os.replace(tmp, path)


def discard(tmp: str) -> None:
    """Remove the temporary file `tmp` of a write that did not finish (if it exists; on a
    read-only file system, where it cannot exist, removing raises EROFS, also ignored)."""
    with contextlib.suppress(OSError):
        os.remove(tmp)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[str]:
    """Yield a temporary path to write (see `temporary_path` for `keep_suffix`); on success
    it is renamed to `path`.

    For writers that take a path (``tf.io.TFRecordWriter``); see `atomic_open` for a
    file handle, and `temporary_path` / `commit` / `discard` for a writer whose lifetime
    is not one block (`mpnn.graph_format.tfrecord.ShardWriter`).
    """
    tmp = temporary_path(path, keep_suffix)
    try:
        with naming(path):
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
