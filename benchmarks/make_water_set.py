"""Make a large, realistic set of water clusters (3 to 30 waters) to benchmark conversion and training.

Copies of the shipped minima (``data/samples/water/minima/wN_lowest.xyz``), each water
moved as a rigid body (a small rotation about its O, a small shift) and every atom
jittered; in a fraction of the structures (``--shuffle-fraction``) the atoms are then put
in random order. Energies are TIP4P interaction energies (ASE's TIP4P model), in
kcal/mol (the converter's default unit: no ``--energy-unit`` needed; each frame also says
``energy_unit=kcal/mol``), and forces are minus their gradient, in kcal/mol/Angstrom (the
standard per-atom ``forces`` column of extended XYZ, or the row's forces in a ``.db``:
``ase.io.read(...).get_forces()`` gives them in that unit; ``forces_unit=kcal/mol/Angstrom``).
TIP4P holds each water rigid and has no intramolecular term: the forces are those of the
other waters only (see `mpnn.bench.water_set.tip4p_energies_and_forces`). With ``--energy
none`` both are 0.0 (for speed runs: the converter needs an energy). See
`mpnn.bench.water_set`. Output: ``OUTPUT/water_KKKK.extxyz`` (or ``.db``) and
``OUTPUT/water_set.json`` (options, counts, units, time). Examples::

    python benchmarks/make_water_set.py --count 30000 -o /tmp/water-30k --workers 2
    python benchmarks/make_water_set.py --count 3000000 --files 30 --energy none -o /tmp/water-3m --workers 2
    mpnn-prep-water /tmp/water-30k -o /tmp/water-30k-records --workers 2
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from mpnn.bench.water_set import WaterSetOptions, write_water_set

log = logging.getLogger("make_water_set")


def build_parser() -> argparse.ArgumentParser:
    defaults = WaterSetOptions(count=1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--count", type=int, required=True, help="number of structures")
    add("-o", "--output", required=True, help="output directory (created; must not hold a set yet)")
    add("--files", type=int, default=defaults.files, help="number of output files (default %(default)s)")
    add("--format", dest="file_format", choices=["extxyz", "db"], default=defaults.file_format,
        help="extended XYZ or ASE database (default %(default)s)")
    add("--energy", choices=["tip4p", "none"], default=defaults.energy,
        help="TIP4P energy (kcal/mol) and forces (kcal/mol/Angstrom), or none (0.0 placeholders) "
             "(default %(default)s)")
    add("--sizes", type=int, nargs="+", default=list(defaults.sizes), metavar="N",
        help="waters per cluster, drawn uniformly (default 3 to 30)")
    add("--rotation", type=float, default=defaults.rotation,
        help="std of each water's rotation-vector components, degrees (default %(default)s)")
    add("--translation", type=float, default=defaults.translation,
        help="std of each water's shift per axis, Angstrom (default %(default)s)")
    add("--noise", type=float, default=defaults.noise,
        help="std of the noise on every coordinate, Angstrom (default %(default)s)")
    add("--shuffle-fraction", type=float, default=defaults.shuffle_fraction,
        help="fraction of structures with their atoms in random order (default %(default)s)")
    add("--seed", type=int, default=defaults.seed, help="seed (default %(default)s)")
    add("--workers", type=int, default=defaults.workers, help="processes, this one included (default %(default)s)")
    add("--minima", default=defaults.minima, help="directory of the wN_lowest.xyz minima (default: the shipped ones)")
    add("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "quiet")}
    try:
        options = WaterSetOptions(**{**settings, "sizes": tuple(args.sizes)})
        report = write_water_set(args.output, options, show_progress=not args.quiet)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        log.error("%s", exc)
        return 1
    log.info("wrote %d structures in %d file(s) to %s in %.1f s (%.3f ms/structure)", options.count,
             options.files, args.output, report["seconds"], 1e3 * report["seconds"] / options.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
