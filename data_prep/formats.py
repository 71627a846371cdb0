"""The water input formats, one line each (as ASE's ``ase/io/formats.py`` registers its own):
the one place that decides, from a file's name, which format an input is, how it is read,
and whether it can carry coordinates and forces.

The converter's directory walk keeps the files whose name matches a format here; a file
named explicitly is read as its format, and as XYZ when its name matches none. Names match
in any case; XYZ and extended XYZ may also be compressed (`COMPRESSION`). Readers:

- ``"xyz"``: our frame scanner and ASE's extended-XYZ parser
  (`data_prep.structures.read_xyz_chunk`), which also reads plain XYZ;
- ``"db"``: the rows of an ASE database (`data_prep.structures.read_database_rows`);
- ``"tutorial"``: TFRecords of ``tf.train.Example`` (`data_prep.tutorial_records`).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from dataclasses import dataclass
from typing import Callable

# Compression suffix -> opener (``opener(path, "rb")``), for the formats that may be compressed.
COMPRESSION: dict[str, Callable] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@dataclass(frozen=True)
class WaterFormat:
    """One input format.

    Attributes:
        name: short name (also the generator's ``--format`` value, `mpnn.bench.water_set`).
        description: what the files hold (energies in the file's unit, positions in Angstrom).
        suffixes: lower-case name endings, matched in any case; the first is the one written.
        reader: ``"xyz"``, ``"db"`` or ``"tutorial"`` (see the module docstring).
        compressible: also read compressed (a `COMPRESSION` suffix after one of `suffixes`).
        coordinates: the structures have atom positions (distances, geometry).
        forces: the structures can carry forces.
    """

    name: str
    description: str
    suffixes: tuple[str, ...]
    reader: str
    compressible: bool = False
    coordinates: bool = True
    forces: bool = True

    def matches(self, name: str) -> bool:
        """Whether the file name `name` (lower case) is of this format."""
        compressed = tuple(s + c for s in self.suffixes for c in COMPRESSION) if self.compressible else ()
        return name.endswith(self.suffixes + compressed)


F = WaterFormat
WATER_FORMATS: dict[str, WaterFormat] = {f.name: f for f in (
    F("xyz", "XYZ: the energy alone on the comment line (the HydroNet minima), or extended XYZ",
      (".xyz",), "xyz", compressible=True),
    F("extxyz", "extended XYZ: energy in the info line or the calculator, forces per atom",
      (".extxyz",), "xyz", compressible=True),
    F("db", "ASE database: energy and forces from each row", (".db",), "db"),
    F("tutorial", "the ExaLearn design tutorial's TFRecords: topology and energy, no coordinates",
      (".proto.gz", ".proto", ".tfrecord", ".tfrecord.gz"), "tutorial", coordinates=False, forces=False),
)}
del F


def water_format(path: str) -> WaterFormat | None:
    """The format of `path` by its name (in any case), or None when it matches none."""
    name = os.path.basename(path).lower()
    return next((f for f in WATER_FORMATS.values() if f.matches(name)), None)


def input_format(path: str) -> WaterFormat:
    """The format `path` is read as: `water_format`, else XYZ (a file named explicitly)."""
    return water_format(path) or WATER_FORMATS["xyz"]


def is_compressed(path: str) -> bool:
    """Whether the name of `path` ends with a `COMPRESSION` suffix (in any case)."""
    return os.path.splitext(path)[1].lower() in COMPRESSION
