"""Shared fixtures: small prepared data sets; and the test tiers (`unit` unless marked).

Helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from mpnn.mpi_env import mpi_launch_environment
from tests.helpers import PDBBIND, TUTORIAL_FILE

# Open MPI refuses to start as root unless told; tests run as root in containers and CI.
os.environ.update(mpi_launch_environment())


def pytest_collection_modifyitems(config, items):
    """Every test not marked `integration` or `cluster` is a `unit` test (setup.cfg)."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in ("integration", "cluster")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def tutorial_subset(tmp_path_factory) -> Path:
    """The first 2,000 real clusters of the tutorial file, in the tutorial's own format."""
    import tensorflow as tf

    path = tmp_path_factory.mktemp("tutorial") / "subset.proto.gz"
    source = tf.data.TFRecordDataset(str(TUTORIAL_FILE), compression_type="GZIP").take(2000)
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in source.as_numpy_iterator():
            writer.write(record)
    return path


@pytest.fixture(scope="session")
def water_dataset(tutorial_subset, tmp_path_factory) -> Path:
    """`tutorial_subset` prepared by mpnn-prep-water: 4 shards per split."""
    from mpnn.cli.prep_water import main

    out = tmp_path_factory.mktemp("water_dataset")
    assert main([str(tutorial_subset), "-o", str(out), "--shards", "4", "--quiet"]) == 0
    return out



@pytest.fixture(scope="session")
def pdbbind_dataset(tmp_path_factory) -> Path:
    """The six sample complexes prepared by mpnn-prep-pdbbind: the core index's two in
    test, the other four split 2/2 into train and valid (4.5 Angstrom cutoff)."""
    from mpnn.cli.prep_pdbbind import main

    out = tmp_path_factory.mktemp("pdbbind_dataset")
    index = PDBBIND / "index"
    args = [str(PDBBIND), "--index", str(index / "INDEX_general_PL_data.2016"), "-o", str(out), "--quiet"]
    args += ["--cutoff", "4.5", "--split", "core", "--core-index", str(index / "INDEX_core_data.2016")]
    assert main([*args, "--fractions", "0.5", "0.5", "0"]) == 0
    return out


def _mount(args: list[str], what: str) -> None:
    """Run ``mount ARGS``, skipping the test where this machine does not allow it."""
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount {what} here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")


@pytest.fixture
def small_filesystem(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs of the test's own, to fill up (skipped where mounting is not allowed)."""
    path = tmp_path / "small"
    path.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], "a tmpfs")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def read_only_view(tmp_path) -> Iterator[Callable[[Path], Path]]:
    """``view(directory)``: a read-only bind mount of `directory` (tests run as root, whom
    file modes do not stop); skipped where mounting is not allowed."""
    views: list[Path] = []

    def view(directory: Path) -> Path:
        target = tmp_path / f"read-only-{len(views)}"
        target.mkdir()
        _mount(["--bind", str(directory), str(target)], "a bind mount")
        views.append(target)
        _mount(["-o", "remount,ro,bind", str(target)], "a read-only bind mount")
        return target

    yield view
    for target in reversed(views):
        subprocess.run(["umount", "-l", str(target)], check=False)
