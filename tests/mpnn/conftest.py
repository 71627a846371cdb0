"""Small trained models shared by the tests of mpnn-predict, mpnn-export, the ASE calculator
and the design search: one per session, trained in this process for a few seconds (the
geometry model in about 20); and the data sets they and the benchmarks' tests read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import MINIMA, write_tip4p_clusters

SMALL_MODEL = {"width": 16, "message_steps": 2}


def _train(data: Path, run_dir: Path, epochs: int, batch_size: int, family: str = "auto", **model_options) -> Path:
    from mpnn import distributed
    from mpnn.config import TrainConfig
    from mpnn.training import train

    distributed.init()
    config = TrainConfig(
        data=str(data), run_dir=str(run_dir), epochs=epochs, batch_size=batch_size, verbose=0, family=family,
        model_options={**SMALL_MODEL, **model_options},
    )
    assert train(config).metrics is not None  # rank 0 wrote metrics.json
    return run_dir


@pytest.fixture(scope="session")
def topology_run(water_dataset, tmp_path_factory) -> Path:
    """A run directory of the MPNN trained for 2 epochs on 2,000 tutorial clusters
    (topology only: no distances), as the demo's model but small."""
    return _train(water_dataset, tmp_path_factory.mktemp("topology_run"), epochs=2, batch_size=64)


@pytest.fixture(scope="session")
def prepared_minima(tmp_path_factory) -> Path:
    """The 28 shipped minima prepared by mpnn-prep-water with its defaults (22 training
    graphs; several shards per split, which the loader settings interleave)."""
    from mpnn.cli.prep_water import main as prep_main

    out = tmp_path_factory.mktemp("minima")
    assert prep_main([str(MINIMA[0].parent), "-o", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def minima_dataset(tmp_path_factory) -> Path:
    """The 28 global minima (3 to 30 waters, with coordinates) prepared with distances."""
    from mpnn.cli.prep_water import main

    out = tmp_path_factory.mktemp("minima_dataset")
    args = [*map(str, MINIMA), "-o", str(out), "--fractions", "0.5", "0.25", "0.25", "--shards", "1", "--quiet"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def distance_run(minima_dataset, tmp_path_factory) -> Path:
    """A run directory of the MPNN with distances, trained for 2 epochs on the minima."""
    return _train(minima_dataset, tmp_path_factory.mktemp("distance_run"), epochs=2, batch_size=4)


@pytest.fixture(scope="session")
def geometry_dataset(tmp_path_factory) -> Path:
    """240 TIP4P clusters of 3 to 6 waters with forces (`write_tip4p_clusters`), prepared
    with the default cutoff: positions, pairs and forces in the records."""
    from mpnn.cli.prep_water import main

    out = tmp_path_factory.mktemp("geometry_dataset")
    source = write_tip4p_clusters(out / "tip4p.extxyz", 240)
    args = [str(source), "-o", str(out / "records"), "--fractions", "0.8", "0.1", "0.1", "--shards", "1", "--quiet"]
    assert main(args) == 0
    return out / "records"


@pytest.fixture(scope="session")
def geometry_run(geometry_dataset, tmp_path_factory) -> Path:
    """A run directory of the geometry model (schnet) trained on energies and forces of
    `geometry_dataset`: 30 epochs of 12 steps (about 15 s of tracing, then 0.2 s each; with
    fewer steps the forces stay near zero and a relaxation has nothing to do)."""
    return _train(geometry_dataset, tmp_path_factory.mktemp("geometry_run"), epochs=30, batch_size=16, family="schnet")
