"""Coordinate records for training tests: perturbed copies of the shipped water minima.

Each copy moves every atom of a minimum by a small random step, and its energy rises from
the minimum's by a harmonic penalty on the steps, so the records carry distances that
matter and a model has something to fit.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np

from tests.conftest import MINIMA

STEP = 0.04  # Angstrom, standard deviation of each coordinate's move
STIFFNESS = 40.0  # kcal/mol per Angstrom^2 of summed squared moves


def write_perturbed_minima(path: Path, copies: int, seed: int = 0) -> int:
    """Write `copies` perturbed copies of each shipped minimum to the extended XYZ `path`
    (energy in kcal/mol in each frame's info); returns the number of structures."""
    rng = np.random.default_rng(seed)
    frames = []
    for minimum in MINIMA:
        atoms = ase.io.read(minimum, format="extxyz")
        energy = float(minimum.read_text().splitlines()[1])
        for _ in range(copies):
            copy = atoms.copy()
            step = rng.normal(scale=STEP, size=copy.positions.shape)
            copy.positions += step
            copy.info = {"energy": energy + STIFFNESS * float((step**2).sum())}
            frames.append(copy)
    ase.io.write(path, frames, format="extxyz")
    return len(frames)


def prepare(out_dir: Path, copies: int, shards: int, seed: int = 0) -> Path:
    """`write_perturbed_minima` converted by mpnn-prep-water into `out_dir` (`shards`
    shards per split); returns `out_dir`."""
    from data_prep.prep_water import main

    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir.parent / f"{out_dir.name}-structures.extxyz"
    write_perturbed_minima(source, copies, seed)
    assert main([str(source), "-o", str(out_dir), "--shards", str(shards), "--quiet"]) == 0
    return out_dir
