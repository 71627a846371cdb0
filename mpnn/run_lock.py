"""One job per run directory: ``<run dir>/run.lock``, held by rank 0 while it trains.

Two jobs writing the same run directory (a requeued Slurm job started while the old one
still runs, a resubmission, a typo in ``--run-dir``) would interleave their checkpoints and
logs. So rank 0 takes an OS lock, `fcntl.flock` on ``run.lock``, before it writes anything,
and writes its identity into the file: host, pid, scheduler job id (Slurm, PBS, ...) and
the time. A second ``mpnn-train`` on the directory gets `RunLockedError`, whose one line
names that holder. The kernel drops a flock when its process ends, however it ends (kill
-9, out of memory, node reboot for a local disk), so a dead job never blocks the next one:
the next job gets the lock and, finding the dead holder's identity still in the file (a
clean end empties it), logs a warning naming it. A requeued job therefore starts as soon
as the old one is gone.

Network file systems: on NFS (v4, and v3 with lockd) Linux emulates flock with POSIX
locks that the server arbitrates, so the lock holds across nodes; a node that dies holds
it until the server's lease expires (about 90 s). Lustre arbitrates flock across nodes
only when mounted with ``-o flock``; with ``localflock`` the lock is only seen on its own
node, and with ``noflock`` flock fails (`ENOSYS`/`EOPNOTSUPP`/`ENOLCK`). Where flock fails,
the file's content decides instead (`holder_is_alive`): a holder on this host whose
process is gone, or one with our own scheduler job id and another restart count (Slurm
runs a job id once at a time), is stale and taken over with a warning; any other holder
is presumed alive and refused, since its liveness cannot be checked from here. Delete
``run.lock`` by hand only when you know that job is gone.

Only rank 0 takes the lock; the other ranks wait for its answer (a broadcast), so that a
refused start ends every rank with the same line. Under ``--elastic`` there is no
broadcast (collectives outside training hang a joining worker, see
`mpnn.engines.horovod_elastic`): the refused rank 0 exits; and whichever worker is rank 0
when the elastic loop (re)starts takes the lock if it does not hold it yet
(`RunLock.ensure`), so a worker that becomes rank 0 after the first was refused is refused
in turn, and one that follows a rank 0 that died takes its lock over. A worker of the same
launch (the same ``horovodrun``: its rendezvous address, written in the lock) that still
holds it, an earlier rank 0 now of another rank, is not a second job: the new rank 0 goes
on without the lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from typing import IO, Iterator

from mpnn import atomic, host
from mpnn.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
# What flock raises where the file system does not support it (Lustre -o noflock, some
# FUSE and old NFS mounts without lockd).
_UNSUPPORTED = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)


class RunLockedError(UserError, RuntimeError):
    """The run directory is in use by another job (the message names it); exit 1.

    Attributes:
        holder: who holds it, when its lock file names it.
    """

    def __init__(self, message: str, holder: "Holder | None" = None) -> None:
        super().__init__(message)
        self.holder = holder

    def __reduce__(self):  # broadcast to the other ranks
        return type(self), (str(self), self.holder)


@dataclass(frozen=True)
class Holder:
    """Who holds a run directory: host name, pid, scheduler job id (None outside a
    scheduler), Slurm's restart count of a requeued job (None elsewhere), the UTC time the
    lock was taken and the launch (``horovodrun``'s rendezvous ``address:port``, shared by
    the workers of one run; None without horovodrun's Gloo)."""

    host: str
    pid: int
    job_id: str | None
    restart: str | None
    since: str
    launch: str | None = None

    @classmethod
    def me(cls) -> "Holder":
        address, port = (os.environ.get(f"HOROVOD_GLOO_RENDEZVOUS_{k}") for k in ("ADDR", "PORT"))
        return cls(
            socket.gethostname(), os.getpid(), host.job_id(), os.environ.get("SLURM_RESTART_COUNT"),
            _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            f"{address}:{port}" if address and port else None,
        )

    @classmethod
    def parse(cls, text: str) -> "Holder | None":
        """The holder written in a lock file's `text`, None if it is empty or not one."""
        try:
            values = json.loads(text)
            return cls(str(values["host"]), int(values["pid"]), values.get("job_id"), values.get("restart"),
                       str(values.get("since", "")), values.get("launch"))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        job = f", job {self.job_id}" if self.job_id else ""
        return f"host {self.host}, pid {self.pid}{job}, since {self.since}"


def holder_is_alive(holder: Holder, me: Holder) -> bool:
    """Whether `holder` may still be running, judged from its identity alone (where flock
    does not work): dead if on this host without its process, or if it is an earlier run
    of our own scheduler job (same job id, another restart count); else presumed alive."""
    if holder.job_id is not None and holder.job_id == me.job_id and holder.restart != me.restart:
        return False
    if holder.host == me.host:
        return _pid_running(holder.pid) and holder.pid != me.pid
    return True


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """The lock of one run directory, taken by `acquire` and given back by `release`."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._handle = None

    def acquire(self) -> None:
        """Take the lock or raise `RunLockedError` naming its holder; a stale holder's lock
        is taken over with a warning.

        Raises:
            RunLockedError: another live job holds it.
            mpnn.atomic.WriteError: the lock file cannot be written (read-only or full).
        """
        me = Holder.me()
        with atomic.naming(self.path):
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            handle = open(self.path, "a+")
        try:
            locked = _flock(handle)
            handle.seek(0)
            previous = Holder.parse(handle.read())
            if locked is False or (locked is None and previous is not None and holder_is_alive(previous, me)):
                who = previous.describe() if previous else "a job that has not written its name yet"
                raise RunLockedError(
                    f"{os.path.dirname(self.path)}: run directory in use by {who} (lock {self.path}); "
                    "wait for that job, or use another --run-dir",
                    previous,
                )
            if previous is not None:
                log.warning(
                    "%s: taking over the lock of a job that ended without releasing it (%s)",
                    self.path, previous.describe(),
                )
            with atomic.naming(self.path):
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(asdict(me)) + "\n")
                handle.flush()
        except BaseException:
            with contextlib.suppress(OSError):  # the holder's name a full disk did not take
                handle.close()
            raise
        self._handle = handle

    def ensure(self) -> None:
        """`acquire` unless this process holds the lock already, or a live worker of the
        same launch does (an elastic run's earlier rank 0: not another job)."""
        if self._handle is not None:
            return
        try:
            self.acquire()
        except RunLockedError as exc:
            launch = Holder.me().launch
            if exc.holder is None or launch is None or exc.holder.launch != launch:
                raise

    def release(self) -> None:
        """Empty the lock file (a clean end) and give the lock back; nothing if not held."""
        if self._handle is None:
            return
        with contextlib.suppress(OSError):  # a full or read-only disk: the lock goes anyway
            self._handle.seek(0)
            self._handle.truncate()
        self._handle.close()  # closing drops the flock
        self._handle = None


def _flock(handle: IO[str]) -> bool | None:
    """Try an exclusive flock on `handle` without waiting: True (taken), False (held by
    another process), None (this file system does not support flock)."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            log.warning("%s: file locks unsupported here (%s); judging the holder by its name", handle.name, exc)
            return None
        raise
    return True


@contextlib.contextmanager
def holding(run_dir: str, root: bool, share: bool = True) -> Iterator[RunLock]:
    """Hold the lock of `run_dir` on rank 0 (`root`) for the block; yields the lock (held on
    rank 0, for `RunLock.ensure` on a rank that becomes rank 0 later) and releases it after.

    Args:
        share: tell the other ranks whether rank 0 got the lock (a broadcast) so that a
            refusal ends every rank with rank 0's line; False under elastic training (no
            collectives there, see `mpnn.engines.horovod_elastic`).

    Raises:
        RunLockedError: on every rank (with `share`) when another job holds it.
        mpnn.atomic.WriteError: likewise when the lock file cannot be written.
    """
    from mpnn import distributed  # imports Horovod and TensorFlow

    lock = RunLock(run_dir)
    failure: Exception | None = None
    if root:
        try:
            lock.acquire()
        except (RunLockedError, atomic.WriteError) as exc:
            failure = exc
    if share:
        failure = distributed.broadcast_object(failure, "run_lock")
    if failure is not None:
        raise failure
    try:
        yield lock
    finally:
        lock.release()
