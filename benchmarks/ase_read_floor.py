"""The read floor of water conversion: ASE's own extended XYZ reader over the same files.

Reads every frame of every ``*.extxyz`` / ``*.xyz`` file under `--inputs` with
``ase.io.iread(..., format="extxyz")`` in this one process and reports wall and CPU seconds,
frames, and CPU milliseconds per frame as JSON. Conversion (``mpnn-bench prep``) must read
the same frames, so its CPU seconds per structure divided by this figure is how far it is
from the floor. Example::

    python benchmarks/ase_read_floor.py --inputs /tmp/bench/water-300k --output floor.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from typing import Sequence


def read_floor(files: Sequence[str]) -> dict[str, float]:
    """Wall and CPU seconds of reading every frame of `files` with ASE's extxyz reader."""
    import ase.io

    frames = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for path in files:
        for _ in ase.io.iread(path, index=":", format="extxyz", parallel=False):
            frames += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "files": len(files),
        "frames": frames,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_frame": round(1000 * cpu / max(frames, 1), 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", required=True, help="directory of .extxyz/.xyz files")
    parser.add_argument("--output", help="JSON report (default: print only)")
    args = parser.parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.inputs, "*.extxyz")) + glob.glob(os.path.join(args.inputs, "*.xyz")))
    if not files:
        parser.error(f"--inputs: no .extxyz or .xyz files in {args.inputs}")
    report = {"inputs": os.path.abspath(args.inputs), **read_floor(files)}
    print(json.dumps(report))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
