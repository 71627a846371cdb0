"""Make a PDBbind-layout tree of N complexes from a few real ones, to benchmark conversion.

``mpnn-bench prep --converter pdbbind`` needs hundreds of complexes to time
``mpnn-prep-pdbbind``; the repository ships six. Each copy, ``OUTPUT/<code>/`` under a new
seeded code (a digit and three letters), holds the ligand SDF and pocket PDB of a source
(taken in turn), both moved by the same random rotation (about the ligand centroid) and
shift, so the complex stays intact, plus Gaussian jitter on every coordinate (Angstrom).
Only the pocket's coordinate columns (31-54) change: residue and atom names stay as they
were. ``OUTPUT/index/INDEX_general_PL_data.2020`` repeats the source's index line under
the copy's code (its affinity, -log10(K/M)); ``OUTPUT/copies.tsv`` names each source.
The copies are for timing only, not independent data. Example::

    python benchmarks/make_pdbbind_tree.py --source data/samples/pdbbind --count 1000 -o /tmp/pdbbind-1000
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import string
import sys
from typing import Sequence

import numpy as np
from rdkit import Chem, rdBase
from scipy.spatial.transform import Rotation

log = logging.getLogger("make_pdbbind_tree")

DEFAULT_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "data", "samples", "pdbbind")
INDEX_NAME = "INDEX_general_PL_data.2020"
_CODE = re.compile(r"^[0-9][a-z0-9]{3}$")
N_CODES = 10 * 26**3


def new_codes(count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct codes: a digit, then three lower-case letters."""
    if count > N_CODES:
        raise ValueError(f"at most {N_CODES} codes exist, asked for {count}")
    numbers = map(int, rng.choice(N_CODES, size=count, replace=False))
    return [str(n // 26**3) + "".join(string.ascii_lowercase[n // 26**k % 26] for k in (2, 1, 0)) for n in numbers]


def index_lines(source: str) -> dict[str, str]:
    """The data lines of the ``SOURCE/index/INDEX_*`` files by code (a later file wins)."""
    lines: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(source, "index", "INDEX_*"))):
        with open(path) as handle:
            lines.update((ln.split()[0].lower(), ln.rstrip("\n")) for ln in handle if ln.strip() and ln[0] != "#")
    return lines


def plain_atoms(mol: Chem.Mol) -> Chem.Mol:
    """`mol` with its query atoms (from the MDL hydrogen-count field, which PDBbind's
    SDFs fill) made plain atoms; RDKit would otherwise write them as SMARTS data S-groups.
    Converting the result gives the same graph as the source file."""
    editable = Chem.RWMol(mol)
    for atom in mol.GetAtoms():
        if atom.HasQuery():
            plain = Chem.Atom(atom.GetAtomicNum())
            for name in ("FormalCharge", "Isotope", "NumRadicalElectrons", "NoImplicit", "NumExplicitHs", "ChiralTag"):
                getattr(plain, f"Set{name}")(getattr(atom, f"Get{name}")())
            editable.ReplaceAtom(atom.GetIdx(), plain, preserveProps=True)
    return editable.GetMol()


def write_copy(source: str, code: str, out: str, rng: np.random.Generator, jitter: float, max_shift: float) -> None:
    """Write a rigidly moved, jittered copy of the complex directory `source` as ``out/<code>/``."""
    name = os.path.basename(os.path.normpath(source))
    with rdBase.BlockLogs():
        ligand = Chem.MolFromMolFile(os.path.join(source, f"{name}_ligand.sdf"), removeHs=False, sanitize=False)
    if ligand is None:
        raise ValueError(f"RDKit cannot read the ligand of {source}")
    with open(os.path.join(source, f"{name}_pocket.pdb")) as handle:
        pocket = handle.readlines()
    atoms = [i for i, line in enumerate(pocket) if line.startswith(("ATOM  ", "HETATM"))]

    # One rotation about the ligand centroid and one shift for ligand and pocket alike.
    conformer = ligand.GetConformer()
    centre = conformer.GetPositions().mean(axis=0)
    rotation = Rotation.random(random_state=rng).as_matrix()
    shift = rng.uniform(-max_shift, max_shift, size=3)

    def move(positions: np.ndarray) -> np.ndarray:  # [n, 3], Angstrom
        return (positions - centre) @ rotation.T + centre + shift + rng.normal(0.0, jitter, size=positions.shape)

    conformer.SetPositions(move(conformer.GetPositions()))
    xyz = np.array([[float(pocket[i][c:c + 8]) for c in (30, 38, 46)] for i in atoms]).reshape(-1, 3)
    for i, position in zip(atoms, move(xyz)):
        columns = "".join(f"{x:8.3f}" for x in position)
        if len(columns) != 24:
            raise ValueError(f"{code}: pocket coordinates {position} overflow the PDB columns; lower --shift")
        pocket[i] = pocket[i][:30] + columns + pocket[i][54:]

    os.makedirs(os.path.join(out, code), exist_ok=True)
    ligand = plain_atoms(ligand)
    ligand.SetProp("_Name", f"{code}_ligand")
    with rdBase.BlockLogs():
        Chem.MolToMolFile(ligand, os.path.join(out, code, f"{code}_ligand.sdf"))
    with open(os.path.join(out, code, f"{code}_pocket.pdb"), "w") as handle:
        handle.writelines(pocket)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--source", default=os.path.normpath(DEFAULT_SOURCE),
        help="tree to copy, with index/INDEX_* files (default: the shipped samples)")
    add("--count", type=int, default=1000, help="complexes to write (default %(default)s)")
    add("-o", "--output", required=True, help="output root (created; must not hold complexes yet)")
    add("--seed", type=int, default=0, help="seed of codes, motions and jitter (default %(default)s)")
    add("--jitter", type=float, default=0.05, help="noise per coordinate, Angstrom (default %(default)s)")
    add("--shift", type=float, default=20.0, help="largest shift per axis, Angstrom (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.count < 1 or args.jitter < 0 or args.shift < 0:
        build_parser().error("--count must be positive, --jitter and --shift not negative")
    lines = index_lines(args.source)
    names = sorted(os.listdir(args.source)) if os.path.isdir(args.source) else []
    sources = [  # complexes with a ligand SDF, a pocket PDB and an index line
        n for n in names if _CODE.match(n) and n in lines
        and all(os.path.exists(os.path.join(args.source, n, f"{n}_{kind}")) for kind in ("ligand.sdf", "pocket.pdb"))
    ]
    if not sources or (os.path.isdir(args.output) and any(_CODE.match(n) for n in os.listdir(args.output))):
        log.error("%s holds no usable complex, or %s already holds complexes", args.source, args.output)
        return 1
    rng = np.random.default_rng(args.seed)
    copies = [(code, sources[i % len(sources)]) for i, code in enumerate(new_codes(args.count, rng))]
    for code, source in copies:
        write_copy(os.path.join(args.source, source), code, args.output, rng, args.jitter, args.shift)
    os.makedirs(os.path.join(args.output, "index"), exist_ok=True)
    header = (
        f"# {args.count} copies of {os.path.abspath(args.source)} by make_pdbbind_tree.py (seed {args.seed}, jitter "
        f"{args.jitter} Angstrom), with their sources' affinities\n"
        "# PDB code, resolution, release year, -logKd/Ki, Kd/Ki, reference, ligand name\n"
    )
    with open(os.path.join(args.output, "index", INDEX_NAME), "w") as handle:
        handle.write(header + "".join(code + re.sub(r"^\s*\S+", "", lines[src]) + "\n" for code, src in copies))
    with open(os.path.join(args.output, "copies.tsv"), "w") as handle:
        handle.write("code\tsource\n" + "".join(f"{code}\t{source}\n" for code, source in copies))
    log.info("wrote %d copies of %d complexes and index/%s to %s", len(copies), len(sources), INDEX_NAME, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
