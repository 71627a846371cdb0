"""Read atomic structures and their energies with ASE, one file at a time.

Supported: plain XYZ with the energy as the only thing on the comment line (the HydroNet
minima), extended XYZ (energy in ``info`` or in the calculator, as ASE writes it), and ASE
databases (``.db``, energy from the row). A file may hold one or many structures. Every
structure yields a `Structure`, which carries either the atoms or the reason they cannot be
used, so a bad frame never hides the good ones around it.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import ase.units
from ase import Atoms

# Energies enter the records in kcal/mol; this converts from the unit of the input files.
KCAL_PER_MOL_PER = {"kcal/mol": 1.0, "eV": ase.units.mol / ase.units.kcal}
STRUCTURE_SUFFIXES = (".xyz", ".extxyz", ".db")
ENERGY_KEYS = ("energy", "Energy", "total_energy", "E")


@dataclass(frozen=True)
class Structure:
    """One structure read from `source` (the `index`-th in that file).

    Attributes:
        atoms: the structure (positions in Angstrom), or None when it could not be read.
        energy: total energy in kcal/mol, or None when the file gives none.
        error: why the structure cannot be used, or None.
    """

    source: str
    index: int
    atoms: Atoms | None
    energy: float | None
    error: str | None = None

    @property
    def record_id(self) -> str:
        return f"{os.path.basename(self.source)}:{self.index}"


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files named by `inputs`: files as given, directories searched recursively for
    `STRUCTURE_SUFFIXES`, and glob patterns. Sorted per input, duplicates dropped.

    Raises:
        FileNotFoundError: an input that names nothing.
    """
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).rglob("*") if p.is_file() and p.suffix in STRUCTURE_SUFFIXES
            )
        elif os.path.exists(item):
            found = [item]
        else:
            found = sorted(glob.glob(item, recursive=True))
        if not found:
            raise FileNotFoundError(f"{item}: no such file, or no structure files in it")
        files.extend(found)
    return list(dict.fromkeys(files))


def read_structures(path: str, energy_unit: str = "kcal/mol") -> Iterator[Structure]:
    """Yield every structure in `path`, energies converted to kcal/mol.

    A frame that cannot be parsed (for example a truncated last frame) yields a
    `Structure` with its `error` and ends the file; the frames before it are kept.
    """
    # ASE's readers are imported here, not above: they bring in scipy (about 0.2 s), which
    # conversion workers that only see tutorial records never need.
    import ase.io

    factor = KCAL_PER_MOL_PER[energy_unit]
    if path.endswith(".db"):
        yield from _read_database(path, factor)
        return
    index = 0
    try:
        # ASE's extxyz reader also reads plain XYZ; a comment line that is only a number
        # ends up in `info` (see `_energy_of`). parallel=False: under MPI, ASE would
        # otherwise read on rank 0 and broadcast, while our ranks read different files.
        for atoms in ase.io.iread(path, index=":", format="extxyz", parallel=False):
            energy = _energy_of(atoms)
            error = None if energy is not None else "no energy (comment line, info or calculator)"
            yield Structure(path, index, atoms, None if energy is None else energy * factor, error)
            index += 1
    except Exception as exc:  # ASE raises many types for malformed text
        yield Structure(path, index, None, None, f"unreadable: {type(exc).__name__}: {exc}")
    if index == 0 and os.path.getsize(path) == 0:
        yield Structure(path, 0, None, None, "empty file")


def _energy_of(atoms: Atoms) -> float | None:
    """Energy from the calculator, then ``info`` keys, then a bare number on the comment
    line; in the file's unit. None when there is none."""
    if atoms.calc is not None:
        try:
            return float(atoms.get_potential_energy())
        except Exception:  # a calculator without an energy (e.g. forces only)
            pass
    for key in ENERGY_KEYS:
        if key in atoms.info:
            return _as_float(atoms.info[key])
    for key, value in atoms.info.items():
        # Plain XYZ: the whole comment line is one number, which the extxyz parser keeps
        # as a key (with value True) or under "comment".
        number = _as_float(key if value is True else value) if key != "comment" else _as_float(value)
        if number is not None:
            return number
    return None


def _as_float(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else math.nan


def _read_database(path: str, factor: float) -> Iterator[Structure]:
    import ase.db  # see read_structures

    try:
        rows = list(ase.db.connect(path, type="db", serial=True).select())
    except Exception as exc:
        yield Structure(path, 0, None, None, f"unreadable database: {type(exc).__name__}: {exc}")
        return
    for index, row in enumerate(rows):
        energy = row.get("energy")
        if energy is None:
            energy = row.key_value_pairs.get("energy")
        atoms = row.toatoms()
        if energy is None:
            yield Structure(path, index, atoms, None, "no energy in database row")
        else:
            yield Structure(path, index, atoms, float(energy) * factor)
