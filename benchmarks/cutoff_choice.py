"""What a pair cutoff leaves out of TIP4P water-cluster energies, and what it costs.

For each cutoff, over a set of clusters written by ``make_water_set.py`` (extxyz with
TIP4P energies):

- the TIP4P interaction energy between waters whose O...O distance is beyond the cutoff
  (pairs an interaction layer does not see directly): its mean and, what a model has to
  learn from elsewhere (message passing, the per-element reference), its standard
  deviation across structures, both per water (kcal/mol);
- the mean number of atom pairs within the cutoff per atom (the model's cost per atom is
  about proportional to it) and per structure.

The default cutoff of `data_prep.geometry` is the one chosen from this table (RESULTS.md,
"Geometry model against SchNetPack"). Example::

    python benchmarks/make_water_set.py --count 3000 --seed 1 -o /tmp/tip4p-3k
    python benchmarks/cutoff_choice.py /tmp/tip4p-3k/water_0000.extxyz --cutoffs 4 5 6 7 8
"""

from __future__ import annotations

import argparse
import json

import ase.io
import numpy as np
from scipy.spatial import cKDTree

from mpnn.bench.water_set import molecules, tip4p_energies_and_forces


def water_pair_energies(waters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TIP4P energy (kcal/mol) and O...O distance (Angstrom) of every pair of the waters
    ``[n, 3, 3]``: TIP4P is pairwise additive, so a pair's energy is that of its dimer."""
    i, j = np.triu_indices(len(waters), 1)
    dimers = waters[np.stack([i, j], axis=1)]  # [pairs, 2, 3, 3]
    energies, _ = tip4p_energies_and_forces(dimers)
    return energies, np.linalg.norm(waters[j, 0] - waters[i, 0], axis=-1)


def cutoff_table(path: str, cutoffs: list[float], limit: int) -> list[dict]:
    """One row per cutoff (see the module docstring) over the first `limit` clusters of `path`."""
    beyond = {cutoff: [] for cutoff in cutoffs}
    pairs = {cutoff: [] for cutoff in cutoffs}
    atoms_seen = []
    for index, atoms in enumerate(ase.io.iread(path, index=":")):
        if index >= limit:
            break
        waters = molecules(atoms, f"{path}:{index}")  # [n, 3, 3]
        energies, distances = water_pair_energies(waters)  # per pair of waters, O...O distance
        tree = cKDTree(atoms.positions)
        atoms_seen.append(len(atoms))
        for cutoff in cutoffs:
            beyond[cutoff].append(energies[distances > cutoff].sum() / len(waters))
            pairs[cutoff].append(2 * len(tree.query_pairs(cutoff)))
    n_atoms = np.asarray(atoms_seen, float)
    return [
        {
            "cutoff": cutoff,
            "structures": len(n_atoms),
            "beyond_mean_per_water": float(np.mean(beyond[cutoff])),
            "beyond_std_per_water": float(np.std(beyond[cutoff])),
            "pairs_per_atom": float(np.sum(pairs[cutoff]) / n_atoms.sum()),
            "pairs_per_structure": float(np.mean(pairs[cutoff])),
        }
        for cutoff in cutoffs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structures", help="extxyz file of water clusters (make_water_set.py)")
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[4.0, 5.0, 6.0, 7.0, 8.0])
    parser.add_argument("--limit", type=int, default=3000, help="clusters read (default 3000)")
    parser.add_argument("--json", help="write the table to this file")
    args = parser.parse_args()
    rows = cutoff_table(args.structures, args.cutoffs, args.limit)
    print(f"{'cutoff':>6} {'beyond mean/water':>18} {'beyond std/water':>17} {'pairs/atom':>11} {'pairs/structure':>16}")
    for row in rows:
        print(f"{row['cutoff']:>6.1f} {row['beyond_mean_per_water']:>18.4f} {row['beyond_std_per_water']:>17.4f} "
              f"{row['pairs_per_atom']:>11.1f} {row['pairs_per_structure']:>16.0f}")
    print("beyond: TIP4P energy between waters farther apart (O...O) than the cutoff, kcal/mol per water")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"structures": args.structures, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
