"""Read PDBbind index files: binding affinities by PDB code.

Two line layouts are understood (``#`` starts a comment line, blank lines are ignored):

- ``INDEX_general_PL_data.YYYY``, ``INDEX_refined_data.YYYY``, ``INDEX_core_data.YYYY``::

      10gs  2.20  1998   6.40  Ki=0.4uM      // 10gs.pdf (3-mer)

  PDB code, resolution (Angstrom, or ``NMR``), release year, -log10(K/M), the measurement,
  then after ``//`` the reference and the ligand name in parentheses;
- CASF ``CoreSet.dat`` (``#code resl year logKa Ka target``)::

      1a30  2.00  1998   4.30  Ki=50uM  1

  the last column is the number of the target cluster (the file names no ligand).

A measurement is ``Kd``, ``Ki`` or ``IC50``; a relation ``=``, ``<``, ``>``, ``<=``, ``>=``
or ``~``; a number and a unit ``fM``, ``pM``, ``nM``, ``uM``, ``mM`` or ``M``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MEASURES = ("Kd", "Ki", "IC50")
RELATIONS = ("=", "<", ">", "<=", ">=", "~")
MOLAR_PER_UNIT = {"fM": 1e-15, "pM": 1e-12, "nM": 1e-9, "uM": 1e-6, "mM": 1e-3, "M": 1.0}

_CODE = re.compile(r"^[0-9][A-Za-z0-9]{3}$")
_MEASUREMENT = re.compile(
    r"^(?P<measure>Kd|Ki|IC50)(?P<relation><=|>=|=|<|>|~)"
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?P<unit>fM|pM|nM|uM|mM|M)$"
)
_LIGAND = re.compile(r"\(([^()]*)\)")


@dataclass(frozen=True)
class IndexEntry:
    """One complex of an index file.

    Attributes:
        code: PDB code, lower case.
        resolution: Angstrom; None for NMR structures.
        year: release year.
        affinity: -log10(K / M), as the index states it.
        measure: ``"Kd"``, ``"Ki"`` or ``"IC50"``.
        relation: ``"="``, ``"<"``, ``">"``, ``"<="``, ``">="`` or ``"~"``.
        value: the measured constant in mol/L (number times unit).
        ligand: ligand name (None in CASF ``CoreSet.dat``).
        path: the index file.
        line: 1-based line number in `path`.
    """

    code: str
    resolution: float | None
    year: int
    affinity: float
    measure: str
    relation: str
    value: float
    ligand: str | None
    path: str
    line: int


class IndexFormatError(ValueError):
    """A malformed index line; the message names the file and line number."""

    def __init__(self, path: str, line: int, problem: str):
        super().__init__(f"{path}:{line}: {problem}")
        self.path, self.line, self.problem = path, line, problem


def parse_line(text: str, path: str, line: int) -> IndexEntry | None:
    """Parse one line of an index file; None for comments and blank lines.

    Raises:
        IndexFormatError: the line has neither layout, or a field is malformed.
    """
    head, _, tail = text.partition("//")
    fields = head.split()
    if not fields or fields[0].startswith("#"):
        return None

    def bad(problem: str) -> IndexFormatError:
        return IndexFormatError(path, line, f"{problem} in {text.strip()!r}")

    if len(fields) == 6 and not tail:  # CASF CoreSet.dat: ... Ka target
        if not fields[5].isdigit():
            raise bad(f"target cluster {fields[5]!r} is not an integer")
    elif len(fields) != 5:
        raise bad(f"{len(fields)} fields before '//' (expected code, resolution, year, -logK, measurement)")
    code, resolution, year, affinity, measurement = fields[:5]
    if not _CODE.match(code):
        raise bad(f"PDB code {code!r} is not 4 characters starting with a digit")
    match = _MEASUREMENT.match(measurement)
    if not match:
        raise bad(f"measurement {measurement!r} is not (Kd|Ki|IC50)(=|<|>|<=|>=|~)<number><fM|pM|nM|uM|mM|M>")
    try:
        resolution_a = None if resolution == "NMR" else float(resolution)
        year_i = int(year)
        affinity_f = float(affinity)
    except ValueError as exc:
        raise bad(f"bad number ({exc})") from None
    value = float(match["number"]) * MOLAR_PER_UNIT[match["unit"]]
    if not math.isfinite(affinity_f) or not 0 < value < math.inf:
        raise bad(f"-logK {affinity!r} or measured value {measurement!r} is not a finite positive number")
    if resolution_a is not None and not 0 < resolution_a < math.inf:
        raise bad(f"resolution {resolution!r} is neither a positive number nor NMR")
    ligand = _LIGAND.search(tail)
    return IndexEntry(
        code=code.lower(),
        resolution=resolution_a,
        year=year_i,
        affinity=affinity_f,
        measure=match["measure"],
        relation=match["relation"],
        value=value,
        ligand=ligand.group(1) if ligand else None,
        path=path,
        line=line,
    )


def read_index(path: str) -> tuple[list[IndexEntry], list[IndexFormatError]]:
    """Read every entry of an index file, collecting malformed lines instead of stopping.

    Returns:
        the entries in file order, and one `IndexFormatError` per malformed line.

    Raises:
        OSError: the file cannot be read.
    """
    entries, errors = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            try:
                entry = parse_line(text, path, number)
            except IndexFormatError as exc:
                errors.append(exc)
                continue
            if entry is not None:
                entries.append(entry)
    return entries, errors
