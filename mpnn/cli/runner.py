"""One way for every command to end: `run` turns the user's errors into one line and an
exit status, and leaves the traceback of anything else (a bug) in place.

- `mpnn.errors.UsageError` (a flag's value): exit 2, ``prog: error: argument --flag: ...``;
  argparse's own errors (an unknown flag, a bad choice) exit 2 the same way before.
- `mpnn.errors.UserError` (a file, model or run that cannot be used; a failed write; a run
  directory in use; a diverged training; nothing converted): exit 1, one line.
- An ``OSError`` naming a file (an input that cannot be opened), or a ``FileNotFoundError``
  (an input that names nothing): exit 1, one line naming it.
- A TensorFlow error of a failed op while reading a data set: the problems ``mpnn-verify``
  finds in it, exit 1; if it finds none, the error is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

from mpnn import verify
from mpnn.errors import UsageError, UserError

USAGE_STATUS = 2
INPUT_STATUS = 1


def run(prog: str, work: Callable[[], int], data: Callable[[], str | None] | None = None) -> int:
    """``work()`` (a command's body, returning its exit status), with the user's errors as
    one line on stderr and `USAGE_STATUS` / `INPUT_STATUS`. `data()` gives the data set
    the command reads (None: none, or not known yet), checked by `mpnn.verify.problems`
    when TensorFlow fails to read it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return work()
    except UsageError as exc:
        return fail(prog, exc, USAGE_STATUS)
    except UserError as exc:
        return fail(prog, exc, INPUT_STATUS)
    except OSError as exc:
        if exc.filename is not None:
            return fail(prog, f"{exc.filename}: {exc.strerror or exc}", INPUT_STATUS)
        if isinstance(exc, FileNotFoundError):  # raised by our input resolution with the path in its message
            return fail(prog, exc, INPUT_STATUS)
        raise
    except Exception as exc:
        path = data() if data is not None and _is_tf_op_error(exc) else None
        if not path:
            raise
        found = verify.problems(path)
        if not found:
            raise
        return fail(prog, "damaged data set: " + "; ".join(found), INPUT_STATUS)


def fail(prog: str, message: object, status: int) -> int:
    """Print ``prog: error: message`` on stderr (argparse's form) and return `status`."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def _is_tf_op_error(exc: Exception) -> bool:
    """Whether `exc` is TensorFlow's error of a failed op (without importing TensorFlow in
    a command that never did: the converters stay TensorFlow-free)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(exc, tf.errors.OpError)
