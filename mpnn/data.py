"""The `tf.data` input pipeline: graph records -> one disjoint graph per batch.

Pipeline per rank::

    shard files (or records) across ranks -> parallel interleave over shard files
    (in blocks of READ_BLOCK records) -> [cache] -> shuffle serialised records -> batch
    -> vectorised parse_example of the used features -> merge the batch into one
    disjoint graph -> prefetch

Every record is seen by exactly one rank per epoch, and every rank runs the same number of
steps (a Horovod allreduce would otherwise wait forever for the rank that finished early):
see `balanced_steps`.

A merged batch is a dict of model inputs (shapes for a batch of B graphs with N atoms and
E directed edges in total):

- ``atom [N] int32``, ``bond [E] int32`` type indices;
- ``connectivity [E, 2] int32`` (receiver, sender), offset into the batch's node range and
  still sorted by receiver;
- ``node_graph_indices [N] int32``, the graph each node belongs to (sorted);
- ``distance [E] float32``, ``atom_features [N, 37]`` and ``rwpe [N, 20]`` (float32) when
  the records have them;
- with geometry: ``positions [N, 3] float32`` (Angstrom) and ``pair_connectivity [P, 2]
  int32`` (receiver, sender of the P directed atom pairs within the cutoff, offset and sorted
  by receiver like the bonds); with forces also the per-atom label ``forces [N, 3]
  float32`` (target unit per Angstrom), which rides with the inputs so that batch cuts and
  rank shares keep it beside its atoms (models never take it as an input);

and the target ``[B] float32``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import tensorflow as tf

from mpnn.graph_format.features import FEATURES, REQUIRED, feature_specs
from mpnn.graph_format.manifest import Manifest, ManifestError

AUTOTUNE = tf.data.AUTOTUNE
_TF_DTYPES = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}
# Features the loader passes on to the model (when present in the records), and the
# per-atom labels that travel with them (see the module docstring).
MODEL_NODE_EDGE_FEATURES = ("atom", "bond", "distance", "atom_features", "rwpe", "positions", "pair_connectivity")
NODE_LABELS = ("forces",)
# Graph-level features kept beside the model inputs to tell records apart in evaluation.
RECORD_INFO_FEATURES = ("record_id", "n_waters")
# Largest relative difference of per-rank record counts accepted for by-file sharding.
FILE_SHARDING_IMBALANCE = 0.05
# Records each reader of the parallel interleave hands over at a time. tf.data's parallel
# interleave pays a fixed cost per element it moves between threads; in blocks the readers
# run about 3x faster (water records, 2 cores: 160,000 single records/s against 500,000 in
# blocks of 256; RESULTS.md, "Loader throughput"). The blocks are split into records again before
# sharding, caching and shuffling.
READ_BLOCK = 256
# Memory of one record in tf.data's in-memory cache besides its serialised bytes: the
# tensor, buffer and string headers of the cached element and the allocator's share.
# Measured: the tutorial's water records (374 bytes serialised) repeated to 118k and 235k
# records raised the RSS by 670 and 656 bytes per cached record, 268 per added record.
CACHE_OVERHEAD_BYTES = 280
# Records read to estimate the mean serialised record size of a split.
CACHE_SAMPLE_RECORDS = 512


def parse_spec(names: Iterable[str]) -> dict[str, tf.io.FixedLenFeature | tf.io.RaggedFeature]:
    """Feature spec for `tf.io.parse_example` on a *batch* of serialised records.

    Graph-level features parse to dense ``[batch]`` tensors; node and edge features to
    ragged ``[batch, None]`` tensors of the flattened rows (see `mpnn.graph_format.example`).
    """
    spec = {}
    for name, feature in feature_specs(names).items():
        dtype = _TF_DTYPES[feature.dtype]
        if feature.level == "graph":
            spec[name] = tf.io.FixedLenFeature([], dtype)
        else:
            spec[name] = tf.io.RaggedFeature(dtype, row_splits_dtype=tf.int64)
    return spec


@dataclass(frozen=True)
class LoaderOptions:
    """Parallelism and buffering of the pipeline; `AUTOTUNE` (-1) lets tf.data decide."""

    interleave_cycle: int = 4
    parallel_reads: int = AUTOTUNE
    parallel_calls: int = AUTOTUNE
    prefetch: int = AUTOTUNE
    shuffle_buffer: int = 100_000
    cache: bool = False
    deterministic: bool = False
    threads: int = 0  # tf.data's thread pool of this pipeline; 0: tf.data's default, one per core


@dataclass(frozen=True)
class RankPlan:
    """What one rank reads: its files, and whether it further takes every size-th record."""

    files: list[str]
    rank_share: tuple[int, int] | None  # (ranks, rank): this rank reads every ranks-th record of all files
    records: int  # records this rank sees per epoch
    steps: int  # batches per epoch, the same on every rank


def plan_rank(counts: Sequence[int], files: Sequence[str], batch_size: int, rank: int, size: int) -> RankPlan:
    """Decide how rank `rank` of `size` reads `files` (with `counts` records each).

    By file (round-robin) when there are at least as many files as ranks and that leaves
    the ranks' record counts within `FILE_SHARDING_IMBALANCE` of each other; otherwise by
    record (every rank reads all files and keeps every size-th record), which balances
    exactly. Write a shard count divisible by the rank count to get by-file sharding.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    total = sum(counts)
    if total < size:
        raise ValueError(f"{total} records cannot be shared across {size} ranks")
    by_file = [sum(counts[r::size]) for r in range(size)]
    if len(files) >= size and min(by_file) >= (1 - FILE_SHARDING_IMBALANCE) * max(by_file):
        per_rank, plan_files, rank_share = by_file, list(files[rank::size]), None
    else:
        per_rank = [total // size + (r < total % size) for r in range(size)]
        plan_files, rank_share = list(files), (size, rank)
    steps = balanced_steps(per_rank, batch_size)
    return RankPlan(plan_files, rank_share, per_rank[rank], steps)


def balanced_steps(records_per_rank: Sequence[int], batch_size: int) -> int:
    """Batches per epoch that every rank can run: ``ceil(min(records) / batch_size)``.

    A rank holding more records spreads them over the same number of batches (see
    `_batch_into_steps`), so no record is dropped and no rank waits.
    """
    return max(1, math.ceil(min(records_per_rank) / batch_size))


def count_records(files: Sequence[str], compression: str = "GZIP") -> list[int]:
    """Records in each TFRecord file (reads them once; manifests make this unnecessary)."""
    compression_type = "GZIP" if compression == "GZIP" else ""
    return [
        int(tf.data.TFRecordDataset(f, compression_type=compression_type).reduce(0, lambda n, _: n + 1))
        for f in files
    ]


def make_dataset(
    files: Sequence[str],
    counts: Sequence[int] | None,
    features: Sequence[str],
    target: str,
    batch_size: int,
    *,
    compression: str = "GZIP",
    shuffle: bool = False,
    seed: int | None = None,
    rank: int = 0,
    size: int = 1,
    options: LoaderOptions = LoaderOptions(),
    with_record_info: bool = False,
    entries: Sequence[str] | None = None,
) -> tuple[tf.data.Dataset, int]:
    """Build the pipeline for one rank.

    Args:
        files, counts: shard files and the number of records in each (None: count them).
        features: features stored in the records (the manifest's list).
        target: name of the target feature.
        batch_size: graphs per batch on this rank (per-rank batch size).
        shuffle, seed: shuffle the records each epoch (seeded: reproducible order).
        rank, size: this rank and the number of ranks.
        with_record_info: also yield ``record_id`` and ``n_waters`` (if present).
        entries: the optional batch entries wanted (of `MODEL_NODE_EDGE_FEATURES` and
            `NODE_LABELS`); None: every one the records have. Each costs parse time (a
            topology model need not parse the pairs of records with geometry).

    Returns:
        the dataset of ``(inputs, target [B])`` (or ``(inputs, target, info)``) and the
        number of batches it yields per epoch.
    """
    if counts is None:
        counts = count_records(files, compression)
    plan = plan_rank(counts, files, batch_size, rank, size)
    compression_type = "GZIP" if compression == "GZIP" else ""
    dataset = tf.data.Dataset.from_tensor_slices(plan.files)
    if shuffle and plan.rank_share is None:
        dataset = dataset.shuffle(len(plan.files), seed=seed)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression_type).batch(READ_BLOCK),
        cycle_length=min(options.interleave_cycle, len(plan.files)),
        num_parallel_calls=options.parallel_reads,
        # By-record sharding needs the same interleaved order on every rank.
        deterministic=plan.rank_share is not None or options.deterministic,
    ).unbatch()
    if plan.rank_share is not None:
        dataset = dataset.shard(*plan.rank_share)
    # Fail (FailedPreconditionError) at the end of a pass with fewer or more records than
    # the manifest counts, rather than train on them silently; mpnn.verify names the shard.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(plan.records))
    if options.cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(min(options.shuffle_buffer, plan.records), seed=seed, reshuffle_each_iteration=True)
    dataset = _batch_into_steps(dataset, plan.records, batch_size, plan.steps)

    keep_info = [f for f in RECORD_INFO_FEATURES if f in features] if with_record_info else []
    spec = parse_spec(loaded_features(features, target, keep_info, entries))

    def parse_and_merge(serialized: tf.Tensor):
        parsed = tf.io.parse_example(serialized, spec)
        inputs = merge_batch(parsed)
        target_values = tf.cast(parsed[target], tf.float32)
        if keep_info:
            return inputs, target_values, {name: parsed[name] for name in keep_info}
        return inputs, target_values

    dataset = dataset.map(parse_and_merge, num_parallel_calls=options.parallel_calls, deterministic=True)
    if options.threads:
        # Ranks sharing a node each get their own share of its cores (see mpnn.distributed).
        threading = tf.data.Options()
        threading.threading.private_threadpool_size = options.threads
        dataset = dataset.with_options(threading)
    return dataset.prefetch(options.prefetch), plan.steps


def cache_bytes_estimate(manifest: "Manifest", split: str, rank: int = 0, size: int = 1) -> int:
    """Bytes rank `rank` of `size` would hold in its in-memory cache of `split`
    (`LoaderOptions.cache`): its records (`plan_rank`) x (the mean serialised size of the
    first `CACHE_SAMPLE_RECORDS` records of the split's first shard + `CACHE_OVERHEAD_BYTES`).
    Reads only that sample, so it costs milliseconds whatever the size of the data set."""
    files, counts = manifest.split(split)
    if not files:
        return 0
    records = plan_rank(counts, files, 1, rank, size).records
    compression_type = "GZIP" if manifest.compression == "GZIP" else ""
    sample = tf.data.TFRecordDataset(files[0], compression_type=compression_type).take(CACHE_SAMPLE_RECORDS)
    sizes = [len(record) for record in sample.as_numpy_iterator()]
    mean = sum(sizes) / len(sizes) if sizes else 0.0
    return int(records * (mean + CACHE_OVERHEAD_BYTES))


def loaded_features(
    features: Sequence[str], target: str, report: Sequence[str] = (), entries: Sequence[str] | None = None
) -> list[str]:
    """The features of `features` that the pipeline parses: those `merge_batch` needs, the
    `entries` wanted (None: every model input and label), the target and the `report`
    features. Parsing costs per feature (the string ``record_id`` alone made
    `tf.io.parse_example` 2.5x slower on water records), so the others are left in the
    records."""
    optional = (*MODEL_NODE_EDGE_FEATURES, *NODE_LABELS) if entries is None else entries
    wanted = {*REQUIRED, *optional, target, *report}
    return [name for name in features if name in wanted]


def _batch_into_steps(dataset: tf.data.Dataset, records: int, batch_size: int, steps: int) -> tf.data.Dataset:
    """Batch `records` serialised records into exactly `steps` batches.

    When plain batching gives `steps` batches it is used; otherwise (this rank holds more
    records than ``steps * batch_size``) consecutive records are grouped so that batch k
    holds records ``[ceil(k * records / steps), ceil((k + 1) * records / steps))``:
    sizes differ by at most one and every record is kept.
    """
    if math.ceil(records / batch_size) == steps:
        return dataset.batch(batch_size)
    records_t = tf.constant(records, tf.int64)
    steps_t = tf.constant(steps, tf.int64)

    def batch_of(index: tf.Tensor) -> tf.Tensor:
        return index * steps_t // records_t

    def size_of(key: tf.Tensor) -> tf.Tensor:
        start = (key * records_t + steps_t - 1) // steps_t
        stop = ((key + 1) * records_t + steps_t - 1) // steps_t
        return stop - start

    return (
        dataset.enumerate()
        .group_by_window(
            key_func=lambda index, _: batch_of(index),
            reduce_func=lambda _, window: window.map(lambda index, record: record).batch(records),
            window_size_func=size_of,
        )
    )


def merge_batch(parsed: dict[str, tf.Tensor | tf.RaggedTensor]) -> dict[str, tf.Tensor]:
    """Merge a parsed batch of B graphs into one disjoint graph (see the module docstring).

    Args:
        parsed: output of `tf.io.parse_example` with `parse_spec`: ragged
            ``[B, None]`` node/edge features (flattened rows), dense ``[B]`` graph features.
    """
    atom, bond = parsed["atom"], parsed["bond"]
    node_offsets = tf.cast(atom.row_splits, tf.int32)  # [B + 1] first node of each graph
    edge_graph = graph_of_each_value(bond.row_splits, tf.shape(bond.flat_values)[0])  # [E]
    local = tf.reshape(tf.cast(parsed["connectivity"].flat_values, tf.int32), [-1, 2])
    inputs = {
        "atom": tf.cast(atom.flat_values, tf.int32),
        "bond": tf.cast(bond.flat_values, tf.int32),
        "connectivity": local + tf.gather(node_offsets, edge_graph)[:, tf.newaxis],
        "node_graph_indices": graph_of_each_value(atom.row_splits, tf.shape(atom.flat_values)[0]),
    }
    if "pair_connectivity" in parsed:
        pairs = parsed["pair_connectivity"]
        pair_graph = graph_of_each_value(pairs.row_splits // 2, tf.shape(pairs.flat_values)[0] // 2)  # [P]
        local_pairs = tf.reshape(tf.cast(pairs.flat_values, tf.int32), [-1, 2])
        inputs["pair_connectivity"] = local_pairs + tf.gather(node_offsets, pair_graph)[:, tf.newaxis]
    for name in (*MODEL_NODE_EDGE_FEATURES, *NODE_LABELS):
        if name in parsed and name not in inputs:
            inputs[name] = tf.reshape(parsed[name].flat_values, [-1, *FEATURES[name].inner_shape])
    return inputs


def graph_of_each_value(row_splits: tf.Tensor, n_values: tf.Tensor) -> tf.Tensor:
    """``[n_values] int32``: the row (graph) of each flat value of a ragged batch with
    `row_splits` ``[B + 1]``, as `tf.RaggedTensor.value_rowids` gives, but in three ops:
    count the rows that start at each position (an empty row starts where the next one
    does) and add up. `value_rowids` builds many more, and instantiating them made each
    new iterator of the pipeline 25 ms slower to start (about 55 against 33 ms; a pass of
    evaluation or of ``mpnn-bench loader``'s one-pass protocol over 29,399 graphs takes
    140 ms in all).
    """
    starts = tf.math.bincount(
        tf.cast(row_splits[1:-1], tf.int32), minlength=n_values, maxlength=n_values, dtype=tf.int32
    )
    return tf.math.cumsum(starts)


def manifest_dataset(
    manifest: Manifest, split: str, batch_size: int, **kwargs: Any
) -> tuple[tf.data.Dataset, int]:
    """`make_dataset` for one split of a prepared data set."""
    files, counts = manifest.split(split)
    if not files:
        raise ManifestError(f"{manifest.path}: split {split!r} is empty")
    return make_dataset(
        files, counts, manifest.feature_names, manifest.target.name, batch_size, compression=manifest.compression,
        **kwargs,
    )
