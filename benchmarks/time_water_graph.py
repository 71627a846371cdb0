"""Time `data_prep.water.water_graph` per structure on generated water clusters.

Makes `--count` perturbed minima in memory (`mpnn.bench.water_set`, sizes 3 to 30 waters
unless `--sizes`, no energies; those the converter would reject are left out), then times, in this process, the median over `--repeats`
passes of: ASE's extended XYZ reader on the same frames (from memory: the read floor of
conversion), and `water_graph` on every frame. Prints milliseconds per structure and the
ratio of the two. Example::

    python benchmarks/time_water_graph.py --count 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import sys
import time
from typing import Sequence

from ase import Atoms

from data_prep.water import WaterGraphError, water_graph
from mpnn.bench import water_set

log = logging.getLogger("time_water_graph")


def seconds_per_structure(clusters: list[Atoms], text: str, repeats: int) -> dict[str, float]:
    """Median seconds per structure of reading `text` (the clusters as extended XYZ) with
    ASE and of building the graph of each of `clusters`."""
    import ase.io

    def read() -> None:
        for _ in ase.io.iread(io.StringIO(text), index=":", format="extxyz"):
            pass

    def graphs() -> None:
        for atoms in clusters:
            water_graph(atoms, 0.0)

    timings = {}
    for name, run in (("ase_read", read), ("water_graph", graphs)):
        passes = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            passes.append((time.perf_counter() - started) / len(clusters))
        timings[name] = statistics.median(passes)
    return timings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="structures (default %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(range(3, 31)), help="waters per cluster")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes; the median counts (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    options = water_set.WaterSetOptions(count=args.count, sizes=tuple(args.sizes), energy="none", seed=args.seed)
    minima = water_set.load_minima(options.minima, options.sizes)
    frames = water_set.make_block(water_set.Block(0, 0, args.count, options, minima))
    clusters, texts = [], []
    for z, p, text in zip(frames.numbers, frames.positions, frames.texts):
        try:
            water_graph(Atoms(numbers=z, positions=p), 0.0)
        except WaterGraphError:
            continue  # the converter would skip it: time the valid clusters only
        clusters.append(Atoms(numbers=z, positions=p))
        texts.append(text)
    mean_atoms = sum(len(a) for a in clusters) / len(clusters)
    log.info("%d valid clusters of %d, %.1f atoms on average; %d timed passes",
             len(clusters), args.count, mean_atoms, args.repeats)
    timings = seconds_per_structure(clusters, "".join(texts), args.repeats)
    print(f"ASE extxyz read: {timings['ase_read'] * 1e3:.3f} ms/structure")
    print(f"water_graph:     {timings['water_graph'] * 1e3:.3f} ms/structure "
          f"({timings['water_graph'] / timings['ase_read']:.2f}x the read)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
