"""Read atomic structures and their energies with ASE, a whole file or a chunk of one.

Supported: plain XYZ with the energy as the only thing on the comment line (the HydroNet
minima), extended XYZ (energy in ``info`` or in the calculator, as ASE writes it), either
optionally compressed (``.gz``, ``.bz2``, ``.xz``), and ASE databases (``.db``, energy from
the row): the formats of `data_prep.formats` that ASE reads. A file may hold one or many
structures. Every structure yields a `Structure`, which carries either the atoms or the
reason they cannot be used, so a bad frame never hides the good ones around it.

Large uncompressed XYZ files are cut into chunks of frames without parsing them:
`scan_xyz_frames` finds the byte offset of every frame (a natoms line, a comment line,
natoms atom lines) from the newline positions of big blocks (NumPy), and `read_xyz_chunk`
parses only the bytes of one chunk with ASE.
"""

from __future__ import annotations

import array
import contextlib
import errno
import glob
import io
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import ase.units
import numpy as np
from ase import Atoms

from data_prep.formats import COMPRESSION, input_format, water_format

log = logging.getLogger(__name__)

# Energies enter the records in kcal/mol; this converts from the unit of the input files.
KCAL_PER_MOL_PER = {"kcal/mol": 1.0, "eV": ase.units.mol / ase.units.kcal}
_SCAN_BLOCK = 1 << 24  # bytes read at a time by `scan_xyz_frames`
ENERGY_KEYS = ("energy", "Energy", "total_energy", "E")
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Structure:
    """One structure read from `source` (the `index`-th in that file).

    Attributes:
        atoms: the structure (positions in Angstrom), or None when it could not be read.
        energy: total energy in kcal/mol, or None when the file gives none.
        error: why the structure cannot be used, or None.
        forces: ``[n_atom, 3]`` forces in kcal/mol/Angstrom, or None when the file gives
            none (as read: shape and values are checked by `data_prep.geometry`).
    """

    source: str
    index: int
    atoms: Atoms | None
    energy: float | None
    error: str | None = None
    forces: np.ndarray | None = None

    @property
    def record_id(self) -> str:
        return f"{os.path.basename(self.source)}:{self.index}"


@dataclass(frozen=True)
class InputListing:
    """What `list_inputs` found.

    Attributes:
        files: the files to read, in input order, each real file once (the first path
            naming it is kept).
        problems: ``(path, reason)`` of inputs that cannot be read (a dangling symlink, a
            symlink loop, a file that cannot be opened): skips, each with its reason.
        passed_over: ``(path, reason)`` of files in a given directory that are not
            structure files (listed, never an error).
    """

    files: list[str]
    problems: list[tuple[str, str]]
    passed_over: list[tuple[str, str]]


def list_inputs(inputs: Sequence[str]) -> InputListing:
    """The files named by `inputs`: files as given, directories searched recursively for
    files of a water format (`data_prep.formats.water_format`; the others are
    `passed_over`), and glob patterns (``**`` recursive). Sorted per input; each real file
    (``os.path.realpath``) once; directory symlinks that lead back into a directory already
    searched are not followed.

    Raises:
        FileNotFoundError: an input that names nothing (no file, no glob match).
    """
    listing = InputListing([], [], [])
    seen: set[str] = set()
    for item in inputs:
        if os.path.isdir(item):
            found = _walk(item, listing.passed_over)
        elif os.path.lexists(item):
            found = [item]
        else:
            found = sorted(_glob(item))
            if not found:
                raise FileNotFoundError(f"{item}: no such file or directory, and no file matches it as a pattern")
        for path in found:
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            problem = _problem(path)
            (listing.problems.append((path, problem)) if problem else listing.files.append(path))
    return listing


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """The readable files of `list_inputs` (for callers that write no manifest, e.g.
    prediction); each input that cannot be read is logged as a warning with its reason."""
    listing = list_inputs(inputs)
    for path, reason in listing.problems:
        log.warning("skipped %s: %s", path, reason)
    return listing.files


def _walk_once(directory: str) -> Iterator[tuple[str, list[str]]]:
    """``(directory, file names)`` of `directory` and every directory under it, sorted,
    following directory symlinks but entering each real directory once (so a symlink loop
    ends)."""
    visited: set[str] = set()
    for root, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs.sort()
        yield root, sorted(names)


def _walk(directory: str, passed_over: list[tuple[str, str]]) -> list[str]:
    """Structure files under `directory` (sorted; see `_walk_once`); other files go to
    `passed_over`."""
    found: list[str] = []
    for root, names in _walk_once(directory):
        for name in names:
            path = os.path.join(root, name)
            if water_format(name) or not os.path.exists(path):  # broken links: a problem, named
                found.append(path)
            else:
                suffix = "".join(Path(name).suffixes[-2:]) or "no suffix"
                passed_over.append((path, f"not a structure file: {suffix}"))
    return sorted(found)


def _glob(pattern: str) -> list[str]:
    """`glob.glob` of `pattern`, where a ``**`` component matches any number of
    directories without entering a directory twice: `glob.glob` follows directory symlinks
    and goes around a loop until the path is too long (a ``self -> .`` link gives 40 copies
    of every file; two such links, 2**40 paths)."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return glob.glob(pattern)
    cut = parts.index("**")
    prefix, rest = os.sep.join(parts[:cut]), os.sep.join(parts[cut + 1 :]) or "*"
    found: list[str] = []
    for base in glob.glob(prefix) if glob.has_magic(prefix) else [prefix or os.curdir]:
        for root, _ in _walk_once(base):
            if not any(part.startswith(".") and part not in (".", "..") for part in Path(root).relative_to(base).parts):
                found.extend(_glob(os.path.join(root, rest)))  # as glob's ``**``: no hidden directories
    return found if prefix else [os.path.relpath(path) for path in found]


def _problem(path: str) -> str | None:
    """Why the input file `path` cannot be read, or None: it is opened (read-only) once."""
    if os.path.islink(path) and not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as exc:
            return "symlink loop" if exc.errno == errno.ELOOP else f"dangling symlink (to {os.readlink(path)})"
    if os.path.isdir(path):
        return "a directory matched as a file"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None


def database_problem(path: str) -> str | None:
    """Why `path` is not an ASE database to read, or None. Checked before ASE opens it:
    ``ase.db.connect`` creates a database (and writes its tables into any SQLite file)
    where there is none, and an input must never be modified. Reads only (SQLite's
    read-only URI mode)."""
    with open(path, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header:
        return "empty file"
    if header != SQLITE_HEADER:
        return "not an ASE database (no SQLite header)"
    try:
        with contextlib.closing(sqlite3.connect(f"{Path(os.path.abspath(path)).as_uri()}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        return f"unreadable database: {exc}"
    if "systems" not in tables:
        return "not an ASE database (an SQLite file without its 'systems' table)"
    return None


@dataclass(frozen=True)
class XyzFrames:
    """Where the frames of an XYZ file are.

    Attributes:
        starts: ``[n_frames]`` byte offset of each complete frame (int64).
        end: byte offset just past the last complete frame.
        tail: True when non-blank bytes follow `end` (a truncated or malformed frame, which
            counts as one more, unreadable, frame).
    """

    starts: np.ndarray
    end: int
    tail: bool

    @property
    def count(self) -> int:
        """Frames, the unreadable tail included."""
        return len(self.starts) + int(self.tail)


def scan_xyz_frames(handle: BinaryIO) -> XyzFrames:
    """Find the frames of the XYZ text read from `handle` (binary) without parsing atoms.

    A frame is a line holding the atom count n, a comment line and n atom lines. The scan
    stops at the first line that should hold an atom count and does not (a blank line
    ends the file, as for ASE) or at a frame cut short; what follows is the `tail`.
    Reads blocks of `_SCAN_BLOCK` bytes: one NumPy pass per block finds its newlines, and
    Python only steps from frame to frame.
    """
    starts = array.array("q")  # 8 bytes a frame (a list of ints would take about 36)
    base = 0  # offset of the current block's first byte
    header = 0  # offset of the line that should hold the next atom count
    carry = b""  # the part of that line in earlier blocks
    pending = 0  # newlines still to pass to the end of the current frame
    block = b""
    while True:
        previous, block = block, handle.read(_SCAN_BLOCK)
        if not block:
            block = previous
            break
        newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
        i = 0  # the next newline of this block to look at
        if pending:
            if pending > len(newlines):
                pending -= len(newlines)
                base += len(block)
                continue
            i, pending = pending, 0
            header = base + int(newlines[i - 1]) + 1
        while i < len(newlines):
            line = carry + block[max(header - base, 0) : newlines[i]]
            carry = b""
            n_atoms = _atom_count(line)
            if n_atoms is None:
                rest = line + block[newlines[i] :]
                tail = bool(rest.strip()) or any(more.strip() for more in iter(lambda: handle.read(_SCAN_BLOCK), b""))
                return XyzFrames(np.asarray(starts, np.int64), header, tail)
            starts.append(header)
            last_line = i + n_atoms + 1  # the newline that ends the frame
            if last_line >= len(newlines):
                pending = last_line + 1 - len(newlines)
                break
            i = last_line + 1
            header = base + int(newlines[last_line]) + 1
        else:
            carry += block[max(header - base, 0) :]  # a count line running into the next block
        base += len(block)
    if pending == 1 and block and not block.endswith(b"\n"):
        pending = 0  # only the newline after the last atom line is missing
        header = base
    if pending:  # the last frame is cut short
        last_start = starts.pop()
        return XyzFrames(np.asarray(starts, np.int64), last_start, True)
    return XyzFrames(np.asarray(starts, np.int64), header, bool(carry.strip()))


def _atom_count(line: bytes) -> int | None:
    """The atom count on an XYZ count line, or None if it holds none."""
    try:
        count = int(line)
    except ValueError:
        return None
    return count if count >= 0 else None


def open_structure_file(path: str) -> BinaryIO:
    """`path` opened for binary reading, decompressed if its suffix says so."""
    opener = COMPRESSION.get(os.path.splitext(path)[1].lower(), open)
    return opener(path, "rb")


def read_structures(path: str, energy_unit: str = "kcal/mol") -> Iterator[Structure]:
    """Yield every structure in `path`, energies converted to kcal/mol (see `read_xyz_chunk`)."""
    factor = KCAL_PER_MOL_PER[energy_unit]
    if input_format(path).reader == "db":
        yield from read_database_rows(path, factor)
        return
    if os.path.getsize(path) == 0:
        yield Structure(path, 0, None, None, "empty file")
        return
    with open_structure_file(path) as handle:
        text = handle.read()
        frames = scan_xyz_frames(io.BytesIO(text))
    yield from _parse_frames(path, 0, text, frames, factor)


def read_first_structure(path: str) -> Iterator[Structure]:
    """The first structure of `path` alone (energy and forces in the file's unit), read
    without reading the rest of the file; nothing for an empty or unreadable one."""
    if input_format(path).reader == "db":
        yield from read_database_rows(path, 1.0, 0, 1)
        return
    with open_structure_file(path) as handle:
        first = handle.readline()
        count = _atom_count(first)
        if count is None:
            return
        text = first + b"".join(handle.readline() for _ in range(count + 1))
    yield from _parse_run(path, 0, text, [0, len(text)], 1.0)


def read_xyz_chunk(
    path: str, first_index: int, start: int, stop: int, n_frames: int, energy_unit: str = "kcal/mol"
) -> Iterator[Structure]:
    """Yield the `n_frames` structures in bytes [start, stop) of the uncompressed XYZ file
    `path`, the first being frame `first_index` of the file.

    A frame ASE cannot parse yields a `Structure` with its `error` ("unreadable: ...") and
    parsing goes on at the next frame.
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        text = handle.read(stop - start)
    frames = scan_xyz_frames(io.BytesIO(text))
    if frames.count != n_frames:
        raise ValueError(f"{path}: {frames.count} frames in bytes {start}-{stop}, planned {n_frames}: file changed?")
    yield from _parse_frames(path, first_index, text, frames, KCAL_PER_MOL_PER[energy_unit])


def _parse_frames(path: str, first_index: int, text: bytes, frames: XyzFrames, factor: float) -> Iterator[Structure]:
    """The structures of the XYZ `text` whose frames are `frames`: the complete ones, then
    the tail as one unreadable frame."""
    yield from _parse_run(path, first_index, text, [*frames.starts.tolist(), frames.end], factor)
    if frames.tail:
        yield from _parse_run(path, first_index + len(frames.starts), text, [frames.end, len(text)], factor)


def _parse_run(path: str, first_index: int, text: bytes, bounds: list[int], factor: float) -> Iterator[Structure]:
    """The structures of the frames ``text[bounds[k]:bounds[k + 1]]``; a frame ASE cannot
    parse is reported and parsing goes on after it."""
    # ASE's readers are imported here, not above: they bring in scipy (about 0.2 s), which
    # conversion workers that only see tutorial records never need.
    import ase.io

    n_frames = len(bounds) - 1
    position = 0  # the next frame to parse
    while position < n_frames:
        parsed = 0
        chunk = io.StringIO(text[bounds[position] : bounds[-1]].decode(errors="replace"))
        try:
            # ASE's extxyz reader also reads plain XYZ; a comment line that is only a number
            # ends up in `info` (see `_energy_of`). parallel=False: under MPI, ASE would
            # otherwise read on rank 0 and broadcast, while our ranks read different chunks.
            for atoms in ase.io.iread(chunk, index=":", format="extxyz", parallel=False):
                energy = _energy_of(atoms)
                error = None if energy is not None else "no energy (comment line, info or calculator)"
                index = first_index + position + parsed
                forces = _forces_of(atoms)
                yield Structure(
                    path, index, atoms, None if energy is None else energy * factor, error,
                    None if forces is None else forces * factor,
                )
                parsed += 1
            if position + parsed < n_frames:
                raise ValueError("no frame where one was expected")
        except Exception as exc:  # ASE raises many types for malformed text
            index = first_index + position + parsed
            yield Structure(path, index, None, None, f"unreadable: {type(exc).__name__}: {exc}")
            parsed += 1
        position += parsed


def count_database_rows(path: str) -> int:
    """Rows of the ASE database `path`.

    Raises:
        ValueError: `path` is not a readable ASE database (see `database_problem`).
    """
    import ase.db  # see _parse_frames

    problem = database_problem(path)
    if problem:
        raise ValueError(problem)

    with ase.db.connect(path, type="db", serial=True) as db:
        return db.count()


def _energy_of(atoms: Atoms) -> float | None:
    """Energy from the calculator, then ``info`` keys, then a bare number on the comment
    line; in the file's unit. None when there is none."""
    if atoms.calc is not None:
        # A file's energy sits in the results of the SinglePointCalculator its reader made:
        # read it there, since get_potential_energy() first compares the atoms with the
        # calculator's copy (about 0.6 ms, a fifth of converting a 50-atom cluster).
        stored = getattr(atoms.calc, "results", {}).get("energy")
        if stored is not None:
            return float(stored)
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


def _forces_of(atoms: Atoms) -> np.ndarray | None:
    """Forces from the calculator's results (where ASE's extxyz reader puts a ``forces``
    property), else a per-atom ``forces`` array; in the file's unit per Angstrom. None when
    there are none."""
    stored = getattr(atoms.calc, "results", {}).get("forces") if atoms.calc is not None else None
    if stored is None:
        stored = atoms.arrays.get("forces")
    return None if stored is None else np.asarray(stored, dtype=np.float64)


def _as_float(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number  # NaN and +-inf too: the converter skips them, naming the value


def read_database_rows(
    path: str, factor: float, start: int = 0, stop: int | None = None
) -> Iterator[Structure]:
    """The structures of rows [start, stop) of the ASE database `path` (in id order),
    energies times `factor`."""
    import ase.db  # see _parse_frames

    problem = database_problem(path)
    if problem:
        yield Structure(path, start, None, None, problem)
        return
    try:
        db = ase.db.connect(path, type="db", serial=True)
        limit = None if stop is None else stop - start
        rows = list(db.select(offset=start, limit=limit, sort="id")) if limit != 0 else []
    except Exception as exc:
        yield Structure(path, start, None, None, f"unreadable database: {type(exc).__name__}: {exc}")
        return
    for index, row in enumerate(rows, start=start):
        energy = row.get("energy")
        if energy is None:
            energy = row.key_value_pairs.get("energy")
        atoms = row.toatoms()
        forces = row.get("forces")
        forces = None if forces is None else np.asarray(forces, dtype=np.float64) * factor
        if energy is None:
            yield Structure(path, index, atoms, None, "no energy in database row", forces)
        else:
            yield Structure(path, index, atoms, float(energy) * factor, forces=forces)
