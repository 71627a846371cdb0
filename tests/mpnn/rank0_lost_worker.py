"""One worker of `test_elastic.test_a_rank_0_lost_at_the_end_of_an_epoch_leaves_every_epoch_logged_once`:
``mpnn-train`` whose rank 0 is lost once, at the end of epoch EPOCH, at POINT of its
epoch-end callbacks, after the epoch's collective operations:

- ``before-log``: before it writes the epoch's row to log.csv (so the epoch has neither row
  nor checkpoint);
- ``after-checkpoint``: after it has written the row and the checkpoint.

Before it dies it drops its host from HOSTS (the file the discovery script prints), so the
survivor finishes alone, and leaves HOSTS.lost (so that no later rank 0 dies too).

Usage: python rank0_lost_worker.py POINT EPOCH HOSTS [mpnn-train arguments]
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from mpnn import distributed
from mpnn.callbacks import CsvLog
from mpnn.checkpoint import SaveTrainingState
from mpnn.cli.train import main


def _die(epoch: int, at_epoch: int, hosts: Path) -> None:
    """Drop this worker's host from `hosts` and kill this process, once, at `at_epoch` on rank 0."""
    lost = hosts.with_name(hosts.name + ".lost")
    if epoch != at_epoch or not distributed.is_root() or lost.exists():
        return
    mine = os.environ["HOROVOD_HOSTNAME"]
    hosts.write_text("".join(line + "\n" for line in hosts.read_text().split() if line.split(":")[0] != mine))
    lost.write_text(f"{mine} at epoch {epoch}\n")
    os.kill(os.getpid(), signal.SIGKILL)


# Where rank 0 dies: (callback class, before its epoch-end method runs?)
POINTS = {"before-log": (CsvLog, True), "after-checkpoint": (SaveTrainingState, False)}


def _patch(point: str, at_epoch: int, hosts: Path) -> None:
    callback, before = POINTS[point]
    original = callback.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        if before:
            _die(epoch, at_epoch, hosts)
        original(self, epoch, logs)
        if not before:
            _die(epoch, at_epoch, hosts)

    callback.on_epoch_end = on_epoch_end


if __name__ == "__main__":
    _patch(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
    sys.exit(main(sys.argv[4:]))
