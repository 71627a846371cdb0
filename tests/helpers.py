"""Helpers shared by the test modules: paths of the shipped samples, small graphs and data
sets built in the test, and the commands the integration tests run.

Test modules import from here, never from each other or from a conftest (fixtures stay in
the conftests; pytest finds them by name).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
WATER = SAMPLES / "water"
MINIMA = sorted((WATER / "minima").glob("w*_lowest.xyz"))
TUTORIAL_FILE = WATER / "water_clusters.proto.gz"
PDBBIND = SAMPLES / "pdbbind"

# Two Horovod ranks on this machine (Gloo, no ssh); the command to run follows.
HOROVODRUN_TWO_RANKS = [os.path.join(os.path.dirname(sys.executable), "horovodrun"), "-np", "2", "-H", "localhost:2",
                        "--gloo"]


def load_benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_checked(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `command` (10-minute limit); fail the test with the ends of its output if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def read_log(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run directory's ``log.csv`` (one per epoch)."""
    with open(Path(run_dir) / "log.csv") as handle:
        return list(csv.DictReader(handle))


# ---- random graphs, serialised and parsed as the loader does -----------------------------

GRAPH_FEATURES = ("record_id", "n_atom", "n_bond", "atom", "bond", "connectivity", "distance", "energy")


def random_graph(rng: np.random.Generator, index: int, max_atoms: int = 6) -> dict:
    """A random graph dict: edges in both directions, sorted by receiver."""
    n_atom = int(rng.integers(1, max_atoms + 1))
    pairs = [(i, j) for i in range(n_atom) for j in range(i + 1, n_atom) if rng.random() < 0.5]
    undirected = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    directed = np.concatenate([undirected, undirected[:, ::-1]])
    directed = directed[np.lexsort((directed[:, 1], directed[:, 0]))]
    return {
        "record_id": f"g:{index}",
        "n_atom": np.int64(n_atom),
        "n_bond": np.int64(len(directed)),
        "atom": rng.integers(0, 2, n_atom),
        "bond": rng.integers(0, 2, len(directed)),
        "connectivity": directed,
        "distance": rng.random(len(directed)).astype(np.float32),
        "energy": np.float32(rng.normal()),
    }


def parse_batch(graphs: list[dict]) -> dict:
    """`graphs` serialised and parsed with the loader's spec (not yet merged)."""
    import tensorflow as tf

    from mpnn.data import parse_spec
    from mpnn.graph_format.example import serialize_graph
    from mpnn.graph_format.features import feature_dtypes

    serialized = tf.constant([serialize_graph(g, feature_dtypes(GRAPH_FEATURES)) for g in graphs])
    return tf.io.parse_example(serialized, parse_spec(GRAPH_FEATURES))


# ---- coordinate records: perturbed copies of the shipped water minima ---------------------
# Each copy moves every atom of a minimum by a small random step, and its energy rises from
# the minimum's by a harmonic penalty on the steps, so the records carry distances that
# matter and a model has something to fit.

PERTURBATION_STEP = 0.04  # Angstrom, standard deviation of each coordinate's move
PERTURBATION_STIFFNESS = 40.0  # kcal/mol per Angstrom^2 of summed squared moves


def write_perturbed_minima(path: Path, copies: int, seed: int = 0) -> int:
    """Write `copies` perturbed copies of each shipped minimum to the extended XYZ `path`
    (energy in kcal/mol in each frame's info); returns the number of structures."""
    import ase.io

    rng = np.random.default_rng(seed)
    frames = []
    for minimum in MINIMA:
        atoms = ase.io.read(minimum, format="extxyz")
        energy = float(minimum.read_text().splitlines()[1])
        for _ in range(copies):
            copy = atoms.copy()
            step = rng.normal(scale=PERTURBATION_STEP, size=copy.positions.shape)
            copy.positions += step
            copy.info = {"energy": energy + PERTURBATION_STIFFNESS * float((step**2).sum())}
            frames.append(copy)
    ase.io.write(path, frames, format="extxyz")
    return len(frames)


def prepare_coordinate_records(out_dir: Path, copies: int, shards: int, seed: int = 0) -> Path:
    """`write_perturbed_minima` converted by mpnn-prep-water into `out_dir` (`shards`
    shards per split); returns `out_dir`."""
    from mpnn.cli.prep_water import main

    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir.parent / f"{out_dir.name}-structures.extxyz"
    write_perturbed_minima(source, copies, seed)
    assert main([str(source), "-o", str(out_dir), "--shards", str(shards), "--quiet"]) == 0
    return out_dir


def fill_disk(path: Path, leave_bytes: int) -> None:
    """Fill the file system of `path` (a new file there) until `leave_bytes` remain free."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError:
        pass  # full
    while True:  # a 64 KiB write may stop short of the last pages
        try:
            os.write(fd, bytes(4096))
        except OSError:
            break
    os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave_bytes))
    os.close(fd)


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, by path relative to it."""
    import hashlib

    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(directory).rglob("*"))
        if path.is_file()
    }


# ---- geometry records: TIP4P energies and forces ------------------------------------------


def write_tip4p_clusters(path: Path, count: int, sizes: tuple[int, ...] = (3, 4, 5, 6), seed: int = 0) -> Path:
    """Write `count` perturbed minima of `sizes` waters with their TIP4P energies (kcal/mol)
    and forces (kcal/mol/Angstrom) to the extended XYZ `path` (`mpnn.bench.water_set`, the
    library of benchmarks/make_water_set.py); returns `path`."""
    from mpnn.bench.water_set import WaterSetOptions, write_water_set

    directory = path.parent / f"{path.stem}-set"
    write_water_set(str(directory), WaterSetOptions(count=count, sizes=sizes, seed=seed))
    (directory / "water_0000.extxyz").rename(path)
    return path


def poison_energies(path: Path, records: set[int]) -> None:
    """Set the energy of `records` (0-based) of the gzip shard `path` to NaN / inf, as a
    writer without the check would have: the records are framed with correct CRCs."""
    import gzip

    from mpnn.graph_format.example import Example
    from mpnn.graph_format.tfrecord import frame, read_records

    framed = []
    for index, record in enumerate(read_records(str(path))):
        if index in records:
            example = Example.FromString(record)
            example.features.feature["energy"].float_list.value[:] = [float("nan") if index % 2 else float("inf")]
            record = example.SerializeToString()
        framed.append(frame(record))
    with gzip.open(path, "wb") as handle:
        handle.write(b"".join(framed))


# ---- benchmark reports (mpnn-bench) --------------------------------------------------------

# Peak RSS of a Python process with NumPy (and TensorFlow in the training benchmark), in
# KiB: a value outside these bounds is in the wrong unit (bytes, MiB) or not a peak RSS.
PEAK_RSS_KIB = (20 * 1024, 8 * 1024**2)
WITH_TENSORFLOW_KIB = 100 * 1024


def check_bench_environment(report: dict) -> None:
    """The machine, versions, date and command line of a benchmark report are this run's."""
    assert 1 <= report["machine"]["cores"] <= os.cpu_count()
    assert report["machine"]["cpu"]
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    assert report["machine"]["memory_gib"] == pytest.approx(memory_gib, rel=0.01)
    assert report["versions"]["tensorflow"] and report["versions"]["python"]
    assert report["date"].endswith("+00:00")  # UTC
    assert isinstance(report["command"], list)
