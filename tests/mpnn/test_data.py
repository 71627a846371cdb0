"""The tf.data loader: schema round trip, merge invariants, sharding across ranks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mpnn.data import (
    READ_BLOCK, Manifest, loaded_features, make_dataset, manifest_dataset, merge_batch, plan_rank,
)
from mpnn.graph_format.example import serialize_graph
from mpnn.graph_format.features import feature_dtypes, validate_graph
from mpnn.graph_format.tfrecord import ShardWriter
from tests.helpers import GRAPH_FEATURES as FEATURES
from tests.helpers import parse_batch, random_graph


def test_schema_round_trip():
    rng = np.random.default_rng(0)
    graph = random_graph(rng, 7)
    validate_graph(graph, FEATURES)
    parsed = parse_batch([graph])
    assert parsed["record_id"].numpy()[0].decode() == "g:7"
    assert parsed["energy"].numpy()[0] == pytest.approx(graph["energy"])
    np.testing.assert_array_equal(parsed["atom"].flat_values.numpy(), graph["atom"])
    np.testing.assert_array_equal(parsed["connectivity"].flat_values.numpy().reshape(-1, 2), graph["connectivity"])
    np.testing.assert_allclose(parsed["distance"].flat_values.numpy(), graph["distance"])


def test_validate_graph_names_the_problem():
    graph = random_graph(np.random.default_rng(1), 0, max_atoms=4)
    graph["atom"] = graph["atom"][:-1]
    with pytest.raises(ValueError, match="'atom' has shape"):
        validate_graph(graph, FEATURES)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 8))
def test_merge_offsets_connectivity_per_graph(seed, batch):
    rng = np.random.default_rng(seed)
    graphs = [random_graph(rng, i) for i in range(batch)]
    merged = {k: v.numpy() for k, v in merge_batch(parse_batch(graphs)).items()}

    offsets = np.cumsum([0] + [int(g["n_atom"]) for g in graphs])
    np.testing.assert_array_equal(merged["atom"], np.concatenate([g["atom"] for g in graphs]))
    np.testing.assert_array_equal(
        merged["node_graph_indices"], np.repeat(np.arange(batch), [int(g["n_atom"]) for g in graphs])
    )
    expected = np.concatenate([g["connectivity"] + offsets[i] for i, g in enumerate(graphs)])
    np.testing.assert_array_equal(merged["connectivity"], expected.reshape(-1, 2))
    # Every edge stays inside its own graph, and receivers stay sorted.
    edge_graph = merged["node_graph_indices"][merged["connectivity"]]
    assert np.all(edge_graph[:, 0] == edge_graph[:, 1])
    assert np.all(np.diff(merged["connectivity"][:, 0]) >= 0)
    np.testing.assert_allclose(merged["distance"], np.concatenate([g["distance"] for g in graphs]))


def _write_files(tmp_path, counts) -> list[str]:
    rng = np.random.default_rng(0)
    files, index = [], 0
    for f, count in enumerate(counts):
        examples = []
        for _ in range(count):
            examples.append(serialize_graph(random_graph(rng, index, 3), feature_dtypes(FEATURES)))
            index += 1
        path = str(tmp_path / f"shard-{f}.tfrecord.gz")
        with ShardWriter(path, "GZIP") as writer:
            for example in examples:
                writer.write(example)
        files.append(path)
    return files


def _ids_seen_by(files, counts, batch_size, rank, size, shuffle):
    dataset, steps = make_dataset(
        files, counts, FEATURES, "energy", batch_size, rank=rank, size=size, shuffle=shuffle, seed=rank,
        with_record_info=True,
    )
    batches = [report["record_id"].numpy().astype(str).tolist() for _, _, report in dataset]
    assert len(batches) == steps and all(batches)
    return [i for b in batches for i in b], steps


@pytest.mark.integration  # 15 generated data sets through the loader on two ranks: about 9 s
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    counts=st.lists(st.integers(1, 23), min_size=1, max_size=5),
    batch_size=st.integers(1, 9),
    shuffle=st.booleans(),
)
def test_two_ranks_see_every_record_exactly_once_in_equal_steps(tmp_path_factory, counts, batch_size, shuffle):
    assume(sum(counts) >= 2)
    files = _write_files(tmp_path_factory.mktemp("shards"), counts)
    seen, steps = zip(*(_ids_seen_by(files, counts, batch_size, r, 2, shuffle) for r in range(2)))
    everything = seen[0] + seen[1]
    assert sorted(everything) == sorted(f"g:{i}" for i in range(sum(counts)))
    assert steps[0] == steps[1]


@pytest.mark.parametrize("size", [1, 2])
def test_files_longer_than_a_read_block_are_read_whole(tmp_path, size):
    counts = [READ_BLOCK + 45, 2 * READ_BLOCK + 1, 7]  # three files: by-record sharding for two ranks
    files = _write_files(tmp_path, counts)
    seen = [i for r in range(size) for i in _ids_seen_by(files, counts, 100, r, size, shuffle=False)[0]]
    assert sorted(seen) == sorted(f"g:{i}" for i in range(sum(counts)))


def test_only_used_features_are_parsed():
    assert loaded_features(FEATURES, "energy") == ["n_atom", "n_bond", "atom", "bond", "connectivity", "distance",
                                                    "energy"]
    assert "record_id" in loaded_features(FEATURES, "energy", ["record_id"])


def test_shard_files_without_counts_are_counted(tmp_path):
    files = _write_files(tmp_path, [3, 5])
    dataset, steps = make_dataset(files, None, FEATURES, "energy", 4)
    assert steps == 2 and sum(len(target) for _, target in dataset) == 8


def test_by_file_when_enough_shards_else_by_record():
    files = ["a", "b", "c", "d"]
    assert plan_rank([5, 5, 5, 5], files, 4, 1, 2).files == ["b", "d"]
    assert plan_rank([5, 5, 5, 5], files, 4, 1, 2).rank_share is None
    # Three files over two ranks would give 10 and 5 records: by record instead.
    assert plan_rank([5, 5, 5], files[:3], 4, 1, 2).rank_share == (2, 1)
    plan = plan_rank([20], ["a"], 4, 1, 2)
    assert plan.files == ["a"] and plan.rank_share == (2, 1) and plan.records == 10


def test_prepared_water_set_loads(water_dataset):
    manifest = Manifest.load(str(water_dataset))
    dataset, steps = manifest_dataset(manifest, "train", 32)
    inputs, target = next(iter(dataset))
    assert target.shape == (32,)
    assert int(inputs["node_graph_indices"][-1]) == 31
    assert set(inputs) == {"atom", "bond", "connectivity", "node_graph_indices"}
    assert steps == -(-manifest.split_records("train") // 32)
