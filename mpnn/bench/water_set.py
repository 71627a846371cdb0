"""Synthetic water-cluster sets for benchmarks: perturbed copies of the shipped minima.

Each structure is a copy of the minimum of its size (``wN_lowest.xyz``, N waters) in
which every water is moved as a rigid body, a small random rotation about its O and a
small random shift, and then every atom gets a little Gaussian noise. Energies are TIP4P
interaction energies (ASE's model and parameters, kcal/mol) and forces are minus their
gradient (kcal/mol/Angstrom, the same unit system; `tip4p_energies_and_forces`), or both
are left at 0.0 for runs that only time the pipeline. In a fraction of the structures the
atoms are then put in random order, so that readers cannot rely on the O, H, H order of
each water.

With the default moves (12 degrees, 0.1 and 0.02 Angstrom) each of 300 copies tried was a
valid water cluster; about 9% of the minima's hydrogen bonds broke, and 4 copies in 5 had
a hydrogen-bond network of their own. Their TIP4P energies per water (1000 copies) lay
between -9.0 and -2.0 kcal/mol, all bound (the minima: -5.8 to -10.9), and their force
components (1000 copies of 3 to 30 waters) were 13 kcal/mol/Angstrom in absolute value on
average, 51 at the 99th percentile, 266 at most. Larger moves make clashing pairs: with
0.2 Angstrom shifts a fifth of the copies had positive energies.

`write_water_set` writes a set as extended XYZ (or ASE databases) in blocks of
`BLOCK_SIZE` structures, each from its own seeded random stream: the output depends on
the options and the seed only, not on the number of worker processes or of files.
``benchmarks/make_water_set.py`` is its command line.
"""

from __future__ import annotations

import collections
import concurrent.futures
import glob
import json
import logging
import multiprocessing
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Literal, Sequence

import numpy as np
from ase import Atoms, units

from data_prep.formats import WATER_FORMATS
from data_prep.water import WaterGraphError, water_molecules

log = logging.getLogger(__name__)

_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
DEFAULT_MINIMA = os.path.normpath(os.path.join(_REPO, "data", "samples", "water", "minima"))
BLOCK_SIZE = 1000  # structures per random stream and per worker task
ENERGY_UNIT = "kcal/mol"
FORCE_UNIT = "kcal/mol/Angstrom"
REPORT_NAME = "water_set.json"
_MINIMUM_NAME = re.compile(r"w(\d+)_lowest\.xyz$")
_KCAL_PER_MOL = units.kcal / units.mol  # eV


@dataclass(frozen=True)
class WaterSetOptions:
    """What `write_water_set` makes.

    Attributes:
        count: number of structures.
        sizes: cluster sizes (waters) to draw from, uniformly; each needs its minimum.
        files: number of output files (the structures in order, split evenly).
        file_format: ``"extxyz"`` or ``"db"`` (ASE database).
        energy: ``"tip4p"`` (TIP4P energies, kcal/mol, and forces, kcal/mol/Angstrom, no
            cutoff: `tip4p_energies_and_forces`) or ``"none"`` (0.0 for both).
        rotation: standard deviation of each component of a water's rotation vector,
            degrees (the rotation is about the water's O; the typical angle is about 1.6x).
        translation: standard deviation of a water's shift along each axis, Angstrom.
        noise: standard deviation of the noise on each coordinate of each atom, Angstrom.
        shuffle_fraction: fraction of structures whose atoms are put in random order.
        seed: seed of everything random.
        workers: processes generating blocks (this one included).
        minima: directory of the ``wN_lowest.xyz`` minima.
    """

    count: int
    sizes: tuple[int, ...] = tuple(range(3, 31))
    files: int = 1
    file_format: Literal["extxyz", "db"] = "extxyz"
    energy: Literal["tip4p", "none"] = "tip4p"
    rotation: float = 12.0
    translation: float = 0.1
    noise: float = 0.02
    shuffle_fraction: float = 0.1
    seed: int = 0
    workers: int = 1
    minima: str = DEFAULT_MINIMA

    def __post_init__(self) -> None:
        if self.count < 1 or self.files < 1 or self.workers < 1:
            raise ValueError("count, files and workers must be at least 1")
        if self.files > self.count:
            raise ValueError(f"{self.files} files for {self.count} structures: some would be empty")
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"sizes must be positive numbers of waters, not {self.sizes}")
        if not 0.0 <= self.shuffle_fraction <= 1.0:
            raise ValueError(f"shuffle fraction {self.shuffle_fraction} is not in [0, 1]")
        if min(self.rotation, self.translation, self.noise) < 0:
            raise ValueError("rotation, translation and noise must not be negative")
        if self.file_format not in ("extxyz", "db") or self.energy not in ("tip4p", "none"):
            raise ValueError(f"unknown file format {self.file_format!r} or energy {self.energy!r}")


def load_minima(directory: str, sizes: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """The minima ``wN_lowest.xyz`` of `directory` (those of `sizes`, or all) by size.

    Returns:
        ``{n_waters: positions [n_waters, 3, 3]}``, the atoms of each water in the order
        O, H, H, Angstrom. Some shipped minima list the atoms as O, H, H without each H
        following its own O; waters are regrouped here by the converter's own covalent
        bonds (`data_prep.water.water_molecules`).

    Raises:
        FileNotFoundError: a size in `sizes` without its minimum.
        ValueError: a minimum that is not a valid water cluster, or is of another size.
    """
    import ase.io  # imported here: scipy comes with it (see `data_prep.structures`)

    paths = {
        int(match.group(1)): path
        for path in glob.glob(os.path.join(directory, "w*_lowest.xyz"))
        if (match := _MINIMUM_NAME.search(path))
    }
    wanted = sorted(set(sizes)) if sizes is not None else sorted(paths)
    missing = [n for n in wanted if n not in paths]
    if missing:
        raise FileNotFoundError(f"{directory}: no minimum w<N>_lowest.xyz for N = {missing}")
    minima = {}
    for n in wanted:
        atoms = ase.io.read(paths[n], format="extxyz")
        minima[n] = molecules(atoms, paths[n])
        if len(minima[n]) != n:
            raise ValueError(f"{paths[n]}: {len(minima[n])} waters, not {n}")
    return minima


def molecules(atoms: Atoms, source: str = "") -> np.ndarray:
    """Positions ``[n_waters, 3, 3]`` (O, H, H per water, Angstrom) of a water cluster.

    Raises:
        ValueError: `atoms` is not a valid water cluster (naming `source`).
    """
    try:
        return atoms.positions[water_molecules(atoms)]
    except WaterGraphError as exc:
        raise ValueError(f"{source}: {exc}") from None


def perturb(minimum: np.ndarray, count: int, rng: np.random.Generator, options: WaterSetOptions) -> np.ndarray:
    """`count` perturbed copies of `minimum` ``[n, 3, 3]`` (O, H, H per water, Angstrom).

    Every water is rotated about its O by a rotation vector with normal components
    (`options.rotation` degrees), shifted by a normal vector (`options.translation`), and
    every atom then moved by normal noise (`options.noise`).

    Returns:
        positions ``[count, n, 3, 3]``, Angstrom.
    """
    from scipy.spatial.transform import Rotation

    n = len(minimum)
    oxygen = minimum[:, :1]  # [n, 1, 3]
    rotvec = rng.normal(0.0, np.radians(options.rotation), size=(count * n, 3))
    rotation = Rotation.from_rotvec(rotvec).as_matrix().reshape(count, n, 3, 3)
    relative = minimum - oxygen  # [n, 3 atoms, 3]
    rotated = np.einsum("cnij,naj->cnai", rotation, relative)
    shift = rng.normal(0.0, options.translation, size=(count, n, 1, 3))
    noise = rng.normal(0.0, options.noise, size=(count, n, 3, 3))
    return oxygen + rotated + shift + noise


def tip4p_energies_and_forces(clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TIP4P energies (kcal/mol) and forces (kcal/mol/Angstrom) of water clusters of one size.

    Args:
        clusters: positions ``[count, n_waters, 3, 3]``, O, H, H per water, Angstrom.

    Returns:
        energies ``[count]``: the energy of each cluster, not periodic and without cutoff
        (every pair of waters interacts), i.e. its interaction (binding) energy; and
        forces ``[count, n_waters, 3, 3]`` on the atoms O, H, H of each water: exactly
        minus the gradient of that energy with respect to `clusters`.

    The model, its parameters and constants are ASE's (`ase.calculators.tip4p`: O-O
    Lennard-Jones, charges on the H and on the M site 0.15 Angstrom from the O along the
    HOH bisector); the sum over pairs of waters is done here, for all clusters at once,
    rather than by ASE's calculator (``TIP4P(rc=np.inf)``), which loops over molecules in
    Python: about 9 ms per cluster of 3 to 30 waters here, 8 CPU hours for 3 million. The
    tests check both agree to 1e-9 (energies) and 1e-7 relative (forces).

    The force on the massless M site is passed on to its water's O and two H by the chain
    rule through the M site's position (as ASE's ``redistribute_forces`` does). TIP4P is a
    rigid-water model: the energy has no intramolecular term, only the interactions between
    waters. So nothing pulls a stretched O-H bond or a bent HOH angle back: the component
    of a force along an O-H bond is the pull of the other waters on the charges of that
    water, not a bond's restoring force. In TIP4P's own dynamics constraints keep each water
    rigid and only each water's net force and torque move it; a model trained on these
    forces learns no stiffness of the water itself, and relaxing with it needs the waters
    held rigid (e.g. ASE's ``FixBondLengths`` on the O-H and H-H distances).
    """
    from ase.calculators.tip4p import epsilon0, k_c, qH, sigma0

    n = clusters.shape[1]
    oxygen, h1, h2 = clusters[:, :, 0], clusters[:, :, 1], clusters[:, :, 2]  # [count, n, 3]
    bisector = (h1 + h2) / 2 - oxygen
    length = np.linalg.norm(bisector, axis=-1, keepdims=True)  # [count, n, 1]
    direction = bisector / length
    m = oxygen + _TIP4P_OM * direction
    sites = np.stack([h1, h2, m], axis=2)  # [count, n, 3 sites, 3]
    charges = np.array([qH, qH, -2 * qH])
    i, j = np.triu_indices(n, 1)  # pairs of waters
    as_i, as_j = np.zeros((n, len(i))), np.zeros((n, len(i)))  # water w is side i / j of pair p
    as_i[i, np.arange(len(i))], as_j[j, np.arange(len(j))] = 1.0, 1.0
    # O-O Lennard-Jones: E(r), and the force on the j side, -dE/dr along r_ij / r.
    d_oo = oxygen[:, j] - oxygen[:, i]  # [count, pairs, 3]
    r_oo = np.linalg.norm(d_oo, axis=-1, keepdims=True)
    s6 = (sigma0 / r_oo) ** 6
    lennard_jones = 4 * epsilon0 * (s6**2 - s6)
    f_oo = 4 * epsilon0 * (12 * s6**2 - 6 * s6) / r_oo**2 * d_oo
    # Coulomb between site a of i and site b of j: E = k q_a q_b / r, force on b E / r^2 d.
    d_sites = sites[:, j, None, :, :] - sites[:, i, :, None, :]  # [count, pairs, 3 (a), 3 (b), 3]
    r_sites = np.linalg.norm(d_sites, axis=-1, keepdims=True)
    coulomb = k_c * (charges[:, None] * charges[None, :])[..., None] / r_sites
    f_sites = coulomb / r_sites**2 * d_sites
    on_j, on_i = f_sites.sum(axis=2), -f_sites.sum(axis=3)  # [count, pairs, 3 sites, 3]
    site_forces = np.einsum("wp,cpsk->cwsk", as_j, on_j) + np.einsum("wp,cpsk->cwsk", as_i, on_i)
    oxygen_forces = np.einsum("wp,cpk->cwk", as_j - as_i, f_oo)
    # M = O + b u, u = n / |n|, n = (H1 + H2) / 2 - O: dM/dn = (b / |n|) (1 - u u^T).
    f_m = site_forces[:, :, 2]
    across = _TIP4P_OM / length * (f_m - np.sum(f_m * direction, axis=-1, keepdims=True) * direction)
    forces = np.stack([oxygen_forces + f_m - across, site_forces[:, :, 0] + across / 2,
                       site_forces[:, :, 1] + across / 2], axis=2)
    energies = lennard_jones.sum(axis=(1, 2)) + coulomb.sum(axis=(1, 2, 3, 4))
    return energies / _KCAL_PER_MOL, forces / _KCAL_PER_MOL


_TIP4P_OM = 0.15  # Angstrom, O to M site (ASE's TIP4P.add_virtual_sites)


@dataclass(frozen=True)
class Block:
    """Task of one worker: structures ``start .. start + count - 1`` of a set."""

    index: int
    start: int
    count: int
    options: WaterSetOptions
    minima: dict[int, np.ndarray]


@dataclass
class Frames:
    """The structures of a block.

    Attributes:
        numbers: atomic numbers ``[n_atom]`` of each structure.
        positions: positions ``[n_atom, 3]`` of each, Angstrom.
        energies: ``[count]``, kcal/mol (0.0 with ``energy="none"``).
        forces: forces ``[n_atom, 3]`` on the atoms of each structure, in the order of its
            `positions`, kcal/mol/Angstrom (0.0 with ``energy="none"``).
        shuffled: ``[count]`` bool, whether the atoms of each were put in random order.
        texts: each as an extended XYZ frame (`extxyz_text`), made by the worker when the
            set is written as extended XYZ; empty otherwise.
    """

    numbers: list[np.ndarray]
    positions: list[np.ndarray]
    energies: np.ndarray
    forces: list[np.ndarray]
    shuffled: np.ndarray
    texts: list[str]


_WATER_NUMBERS = np.array([8, 1, 1])


def make_block(block: Block) -> Frames:
    """The structures of `block`, from the random stream ``(seed, block index)``."""
    options = block.options
    rng = np.random.default_rng([options.seed, block.index])
    sizes = rng.choice(np.asarray(options.sizes), size=block.count)
    clusters: list[np.ndarray] = [np.empty(0)] * block.count  # [n, 3, 3] each
    cluster_forces: list[np.ndarray] = [np.empty(0)] * block.count  # [n, 3, 3] each
    energies = np.zeros(block.count)
    for n in np.unique(sizes).tolist():
        where = np.flatnonzero(sizes == n)
        copies = perturb(block.minima[n], len(where), rng, options)
        if options.energy == "tip4p":  # needs each water's atoms as O, H, H: before any shuffling
            energies[where], forces = tip4p_energies_and_forces(copies)
        else:
            forces = np.zeros_like(copies)
        for k, copy, force in zip(where.tolist(), copies, forces):
            clusters[k], cluster_forces[k] = copy, force
    shuffled = rng.random(block.count) < options.shuffle_fraction
    numbers, positions, atom_forces = [], [], []
    for cluster, force, shuffle in zip(clusters, cluster_forces, shuffled.tolist()):
        z, p, f = np.tile(_WATER_NUMBERS, len(cluster)), cluster.reshape(-1, 3), force.reshape(-1, 3)
        if shuffle:
            order = rng.permutation(len(z))
            z, p, f = z[order], p[order], f[order]
        numbers.append(z)
        positions.append(p)
        atom_forces.append(f)
    texts = []
    if options.file_format == "extxyz":
        texts = [extxyz_text(*frame) for frame in zip(numbers, positions, energies.tolist(), atom_forces)]
    return Frames(numbers, positions, energies, atom_forces, shuffled, texts)


_SYMBOL = {8: "O", 1: "H"}


def extxyz_text(numbers: np.ndarray, positions: np.ndarray, energy: float, forces: np.ndarray) -> str:
    """One frame of extended XYZ as `ase.io.write` writes it (not periodic), read back by
    `ase.io.read` to the same atoms, positions ``[n_atom, 3]`` (Angstrom), energy
    (kcal/mol) and forces ``[n_atom, 3]`` (kcal/mol/Angstrom): ASE's reader puts the
    ``energy`` key and the ``forces`` column into a SinglePointCalculator, so
    ``atoms.get_potential_energy()`` and ``atoms.get_forces()`` give them (in these units,
    not ASE's eV; the frame says so in ``energy_unit`` and ``forces_unit``).

    Written here rather than by `ase.io.write`: ASE's writer needs an `Atoms` object and
    sets up its columns per frame, about 8x as long per frame as this one format string
    (1.4 against 0.18 ms per 50-atom frame, measured on a loaded machine), and millions of
    frames are written. Positions have 8 decimals, as ASE writes them; the energy its shortest
    round-tripping form. Forces have 8 decimals too (ASE's ``%16.8f``): finite
    differences of the energy see them to about 1e-8 kcal/mol/Angstrom.
    """
    lines = "".join(f"{_SYMBOL[z]} %.8f %.8f %.8f %.8f %.8f %.8f\n" for z in numbers.tolist())
    header = (
        f"{len(numbers)}\nProperties=species:S:1:pos:R:3:forces:R:3 energy={float(energy)!r} "
        f'energy_unit={ENERGY_UNIT} forces_unit={FORCE_UNIT} pbc="F F F"\n'
    )
    return header + lines % tuple(np.concatenate([positions, forces], axis=1).ravel().tolist())


def write_water_set(output: str, options: WaterSetOptions, show_progress: bool = False) -> dict:
    """Write a set of `options.count` structures into the directory `output`.

    Files are ``water_KKKK.extxyz`` (or ``.db``), K = 0 .. files - 1, each holding the
    next ``count / files`` structures, and ``water_set.json`` with the options, the files
    and their counts, and how long it took.

    Returns:
        the report written to ``water_set.json``.

    Raises:
        FileExistsError: `output` already holds set files.
    """
    from tqdm import tqdm

    minima = load_minima(options.minima, options.sizes)
    os.makedirs(output, exist_ok=True)
    suffix = WATER_FORMATS[options.file_format].suffixes[0]
    paths = [os.path.join(output, f"water_{k:04d}{suffix}") for k in range(options.files)]
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        raise FileExistsError(f"{existing[0]} exists: choose a new output directory")
    # File k holds structures bounds[k] .. bounds[k + 1] - 1.
    bounds = [k * options.count // options.files for k in range(options.files + 1)]
    blocks = [
        Block(b, start, min(BLOCK_SIZE, options.count - start), options, minima)
        for b, start in enumerate(range(0, options.count, BLOCK_SIZE))
    ]
    append = _append_database if options.file_format == "db" else _append_text
    started, cpu_started = time.perf_counter(), time.process_time()
    shuffled = 0
    results = _made_in_order(blocks, options.workers)
    for block, frames in zip(blocks, tqdm(results, total=len(blocks), unit="block", disable=not show_progress)):
        end = block.start + block.count
        for k, path in enumerate(paths):
            first, last = max(bounds[k], block.start), min(bounds[k + 1], end)
            if first < last:
                append(path, frames, first - block.start, last - block.start)
        shuffled += int(frames.shuffled.sum())
    report = {
        "options": asdict(options),
        "energy_unit": ENERGY_UNIT if options.energy == "tip4p" else "none (0.0 placeholder)",
        "forces_unit": FORCE_UNIT if options.energy == "tip4p" else "none (0.0 placeholder)",
        "files": {os.path.basename(p): bounds[k + 1] - bounds[k] for k, p in enumerate(paths)},
        "shuffled": shuffled,
        "seconds": round(time.perf_counter() - started, 3),
        "parent_cpu_seconds": round(time.process_time() - cpu_started, 3),
    }
    with open(os.path.join(output, REPORT_NAME), "w") as handle:
        json.dump(report, handle, indent=2)
    return report


def _made_in_order(blocks: Sequence[Block], workers: int) -> Iterator[Frames]:
    """`make_block` of every block, in order: in this process alone (`workers` 1), or in
    `workers` spawned processes with at most two blocks each in flight, so that memory stays
    bounded however many blocks there are."""
    if workers == 1:
        yield from map(make_block, blocks)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as executor:
        pending: collections.deque = collections.deque()
        for block in blocks:
            pending.append(executor.submit(make_block, block))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _append_text(path: str, frames: Frames, first: int, last: int) -> None:
    """Append frames `first` .. `last` - 1 of `frames` to the extended XYZ file `path`."""
    with open(path, "a") as handle:
        handle.writelines(frames.texts[first:last])


def _append_database(path: str, frames: Frames, first: int, last: int) -> None:
    """Append frames `first` .. `last` - 1 of `frames` to the ASE database `path`, in one
    transaction: energy and forces as the row's (kcal/mol, kcal/mol/Angstrom: ASE's
    ``row.energy``, ``row.forces``, and an ``Atoms`` read back has them in its calculator),
    and ``energy_unit`` and ``forces_unit`` keys."""
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    with ase.db.connect(path, type="db") as database:
        rows = zip(frames.numbers[first:last], frames.positions[first:last],
                   frames.energies[first:last].tolist(), frames.forces[first:last])
        for z, p, e, f in rows:
            atoms = Atoms(numbers=z, positions=p)
            atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
            database.write(atoms, energy_unit=ENERGY_UNIT, forces_unit=FORCE_UNIT)
