"""``python -m mpnn.group_split``: re-split a prepared data set by group, e.g. to test size
extrapolation within the data: train on clusters of 3-9 waters, test on 10-11::

    python -m mpnn.group_split work/water -o work/water-3to9 --train-groups 3-9 --test-groups 10-11
    mpnn-train --data work/water-3to9 ...

Every record of every split of the source is read once; records whose group is in
`--train-groups` are shuffled (seeded) into train and valid (`--valid-fraction`), records
in `--test-groups` form the test set, the others are left out. The new manifest is the
source's with new splits, target statistics fitted on the new training split (the model
starts from them), and a ``derived_from`` section saying how it was made. The shards are
written with `data_prep.records.write_splits`, as `mpnn-prep-water` writes them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf

from data_prep import records
from mpnn.data import Manifest
from mpnn.extrapolation import parse_ranges
from mpnn.schema import parse_spec

log = logging.getLogger("mpnn.group_split")


@dataclass(frozen=True)
class GroupSplitOptions:
    """How to re-split: inclusive (low, high) group ranges, validation share of the
    training groups, seed of that draw, and shards per split."""

    train_groups: tuple[tuple[int, int], ...]
    test_groups: tuple[tuple[int, int], ...]
    valid_fraction: float = 0.1
    seed: int = 0
    shards: int = 4


def read_all(manifest: Manifest) -> list[records.Converted]:
    """Every record of every split, with its target, group and per-type atom counts."""
    group = manifest.content.get("group", {}).get("name")
    if group is None:
        raise ValueError(f"{manifest.path}: the data set has no group to split by")
    spec = {k: v for k, v in parse_spec(manifest.features).items() if k in (group, "atom", manifest.target)}
    n_types = len(manifest.content["vocab"]["atom"])
    out = []
    compression = "GZIP" if manifest.compression == "GZIP" else ""
    for split in manifest.content["splits"]:
        files, _ = manifest.split(split)
        for path in files:
            batches = tf.data.TFRecordDataset(path, compression_type=compression).batch(4096)
            for examples in batches:
                parsed = tf.io.parse_example(examples, spec)
                atom_splits = parsed["atom"].row_splits.numpy()
                atom = parsed["atom"].flat_values.numpy()
                targets, group_values = parsed[manifest.target].numpy(), parsed[group].numpy()
                for k, example in enumerate(examples.numpy()):
                    out.append(records.Converted(
                        path, len(out), example, float(targets[k]),
                        records.atom_type_counts(atom[atom_splits[k] : atom_splits[k + 1]], n_types),
                        group=int(group_values[k]),
                    ))
    return out


def group_split(source: Manifest, out_dir: str, options: GroupSplitOptions) -> str:
    """Write the re-split data set into `out_dir`; returns the new manifest's path."""
    converted = read_all(source)
    groups = np.array([r.group for r in converted])

    def within(ranges) -> np.ndarray:
        return np.flatnonzero(np.any([(groups >= lo) & (groups <= hi) for lo, hi in ranges], axis=0))

    train_pool, test = within(options.train_groups), within(options.test_groups)
    if np.intersect1d(train_pool, test).size:
        raise ValueError("train and test groups overlap")
    if not len(train_pool) or not len(test):
        raise ValueError(f"{source.path}: no records in the train or in the test groups")
    rng = np.random.default_rng(options.seed)
    train_pool = rng.permutation(train_pool)
    n_valid = int(round(options.valid_fraction * len(train_pool)))
    splits = {"train": train_pool[n_valid:], "valid": np.sort(train_pool[:n_valid]), "test": test}
    section = records.write_splits(converted, splits, out_dir, options.shards, source.compression)
    manifest = dict(source.content)
    manifest.update(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        splits=section,
        target_stats=records.target_statistics([converted[i] for i in splits["train"]], manifest["vocab"]["atom"]),
        derived_from={
            "manifest": os.path.abspath(source.path),
            "train_groups": [list(r) for r in options.train_groups],
            "test_groups": [list(r) for r in options.test_groups],
            "valid_fraction": options.valid_fraction,
            "seed": options.seed,
        },
    )
    return records.write_manifest(out_dir, manifest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpnn.group_split", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="prepared data set (manifest.json or its directory)")
    parser.add_argument("-o", "--output", required=True, help="directory of the new data set")
    parser.add_argument("--train-groups", nargs="+", required=True, help="inclusive ranges, e.g. 3-9")
    parser.add_argument("--test-groups", nargs="+", required=True, help="inclusive ranges, e.g. 10-11")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = GroupSplitOptions(
            tuple(parse_ranges(args.train_groups)), tuple(parse_ranges(args.test_groups)),
            args.valid_fraction, args.seed, args.shards,
        )
        path = group_split(Manifest.load(args.data), args.output, options)
    except (ValueError, OSError) as exc:
        print(f"mpnn.group_split: error: {exc}", file=sys.stderr)
        return 2
    manifest = Manifest.load(path)
    counts = {name: s["records"] for name, s in manifest.content["splits"].items()}
    log.info("%s: train %d, valid %d, test %d records", path, counts["train"], counts["valid"], counts["test"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
