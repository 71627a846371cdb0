"""Shard file names: the one place that decides them."""

from __future__ import annotations

from mpnn.graph_format.tfrecord import COMPRESSIONS


def shard_file_name(split: str, shard: int, n_shards: int, compression: str, part: int | None = None) -> str:
    """File name of shard `shard` of `n_shards` of `split` written by conversion part `part`
    (None when one part writes everything), e.g. ``train-00001-of-00004.tfrecord.gz`` or
    ``train-p0002-00001-of-00004.tfrecord.gz``."""
    prefix = "" if part is None else f"p{part:04d}-"
    return f"{split}-{prefix}{shard:05d}-of-{n_shards:05d}.tfrecord{COMPRESSIONS[compression]}"
