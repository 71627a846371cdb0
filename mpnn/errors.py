"""The errors a user can fix, in one place: what every command reports in one line.

Every command's ``main()`` goes through `mpnn.cli.runner.run`, which turns them into one
line on stderr and an exit status:

- `UsageError`: a flag given a value it does not allow, exit 2, in argparse's words
  (``prog: error: argument --flag: ...``);
- any other `UserError` (an input that cannot be used, a model that cannot serve the
  request, a failed write, a run directory in use, a diverged training, nothing
  converted): exit 1, one line naming the file or the run;
- anything else is a bug and keeps its traceback.

A leaf module: it imports nothing of this package (nor TensorFlow), so every layer,
the TensorFlow-free converters included, may raise these (and `require_path`, the one
wording of a missing input). The errors of one concern
live beside it and derive from these (`mpnn.graph_format.manifest.ManifestError`,
`mpnn.verify.ShardError`, `mpnn.checkpoint.CheckpointError`, `mpnn.atomic.WriteError`,
`mpnn.run_lock.RunLockedError`, `mpnn.divergence.TrainingDiverged`,
`data_prep.records.StrictModeError`, ...), each keeping the builtin base
(``ValueError``, ``OSError``, ``RuntimeError``) its callers catch.
"""

from __future__ import annotations

import os


class UserError(Exception):
    """A problem the user can fix; the message names the file, flag or run. Exit 1."""


class UsageError(UserError, ValueError):
    """A flag given a value it does not allow (the message names the flag). Exit 2."""


class InputError(UserError, RuntimeError):
    """An input file or directory that cannot be used (the message names it)."""


class ModelError(InputError, ValueError):
    """A model that cannot be used for the request (the message names the model and why)."""


def require_path(path: str, flag: str, what: str) -> None:
    """`path` exists; `InputError` naming it and the flag that takes it (`flag` takes
    `what`) otherwise: the one wording of a missing input, for every command."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory ({flag} takes {what})")
