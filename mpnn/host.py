"""The machine a process runs on: its usable cores, memory, peak memory and the
``host_info.json`` of a run (host, CPU, memory, GPUs, library versions).

Importing this module does not import TensorFlow (the converters' workers use
`peak_rss_kib`); `host_info` imports it when called.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import resource
import socket
from typing import Any

import psutil

# Job-id variables of the schedulers we run under, in order of preference.
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "COBALT_JOBID", "LSB_JOBID")


def job_id() -> str | None:
    """The scheduler's id of this job (the first set variable of `JOB_ID_VARIABLES`), or None."""
    return next((os.environ[v] for v in JOB_ID_VARIABLES if os.environ.get(v)), None)


def usable_cores() -> int:
    """Cores this process may run on (its CPU binding or the scheduler's allocation, not
    the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_memory_bytes() -> int:
    """Memory available to new allocations now (bytes, psutil's ``available``)."""
    return int(psutil.virtual_memory().available)


def peak_rss_kib() -> int:
    """This process's own peak resident set size so far, KiB.

    Linux ``VmHWM`` of ``/proc/self/status``, read here because neither psutil (which has
    no peak) nor ``ru_maxrss`` gives it: ``ru_maxrss`` of a spawned worker starts from its
    parent's peak at spawn time (Linux carries it over fork and exec). Elsewhere
    ``ru_maxrss`` (KiB on Linux).
    """
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def keras_version() -> str:
    """The Keras that ``tf.keras`` is: tf-keras on TensorFlow 2.16+ (Keras 2 API,
    ``TF_USE_LEGACY_KERAS=1``, see `mpnn`), the keras package (2.15) on TensorFlow 2.15."""
    from importlib import metadata

    for package in ("tf-keras", "keras"):
        try:
            return f"{package} {metadata.version(package)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def host_info(ranks: int, local_ranks: int, engine_versions: dict[str, str] | None = None) -> dict[str, Any]:
    """Host, CPU, memory, GPUs, rank counts and library versions of this run
    (`engine_versions`: the engine's own, `mpnn.engines.Engine.versions`, if one runs)."""
    import numpy
    import tensorflow as tf

    import mpnn

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
        "ranks": ranks,
        "local_ranks": local_ranks,
        "job_id": job_id(),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras_version(),
            **(engine_versions or {}),
            "numpy": numpy.__version__,
            "mpnn": mpnn.__version__,
        },
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str:
    """The CPU's model name (psutil does not give it; ``/proc/cpuinfo`` does on Linux)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor()
