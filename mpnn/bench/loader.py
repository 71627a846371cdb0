"""``mpnn-bench loader``: throughput of the project's `tf.data` pipeline.

Measures `mpnn.data.manifest_dataset` itself (read, decompress, batch, parse, merge into
one disjoint graph) over batch sizes and the settings of the ExaLearn tutorial's
``profile_data_loader`` sweep:

- ``none``: one file at a time, one reader, one parse call, no prefetch;
- ``prefetch``: as ``none``, plus prefetch (AUTOTUNE);
- ``threads``: N parallel reads, N parallel parse calls, prefetch of N batches;
- ``autotune``: `LoaderOptions` defaults, every parallel setting AUTOTUNE;
- ``cache``: ``autotune`` with the serialised records cached in memory (what
  ``mpnn-train`` does by default), measured after the pass that fills the cache (batching,
  parsing and merging still run every pass).

For each setting and batch size, one iterator runs over the repeated dataset: it takes
the warm-up batches (plus one whole pass for ``cache``) untimed, then times `repeats`
windows of one pass each (the split's batches per epoch, so each window holds every
record once) and reports the median. Batches are pulled one at a time from Python, as a
training loop would; the iteration overhead is part of the figure.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from mpnn import host
from mpnn.bench.common import format_table, median, mib
# `declared`: not `settings`, which names the loader settings measured here.
from mpnn import settings as declared

log = logging.getLogger("mpnn-bench.loader")

DEFAULT_BATCH_SIZES = (64, 256, 1024, 2048)
SETTING_NAMES = ("none", "prefetch", "threads", "autotune", "cache")


@dataclass(frozen=True)
class LoaderBenchOptions:
    """What ``mpnn-bench loader`` measures (`run`).

    Attributes:
        data: the prepared data set (``manifest.json`` or its directory).
        split: the split read (``train``, ``valid``, ``test``).
        batch_sizes: graphs per batch, one measurement per setting and batch size.
        repeats: timed passes (one pass: every record of the split once) per setting and
            batch size; the median rate is reported.
        warmup_batches: untimed batches before the first timed pass (``cache`` also takes
            the pass that fills its cache untimed).
        threads: parallel reads and parse calls (and batches prefetched) of the ``threads``
            setting; default: the cores this process may use.
        settings: the settings measured (of `SETTING_NAMES`), in the sweep's order.
        shuffle: shuffle the records as training does.
    """

    data: str = declared.setting(help="prepared data set (manifest.json or its directory)")
    split: str = declared.setting("train", "split to read (default train)")
    batch_sizes: tuple[int, ...] = declared.setting(DEFAULT_BATCH_SIZES, "graphs per batch", declared.EACH_AT_LEAST_1)
    repeats: int = declared.setting(3, "timed passes (default 3); the median is reported", declared.AT_LEAST_1)
    warmup_batches: int = declared.setting(5, "untimed batches before the first pass (default 5)", declared.AT_LEAST_0)
    threads: int = declared.setting(
        help="parallel reads and parse calls of the 'threads' setting (default: the usable cores)",
        allowed=declared.AT_LEAST_1, default_factory=host.usable_cores,
    )
    settings: tuple[str, ...] = declared.setting(SETTING_NAMES, "settings to measure", choices=SETTING_NAMES)
    shuffle: bool = declared.setting(False, "shuffle the records as training does")

    def __post_init__(self) -> None:
        """Raise `UsageError` naming the flag of a setting out of range."""
        declared.check(self)


@dataclass(frozen=True)
class Setting:
    """One loader configuration of the sweep."""

    name: str
    description: str
    options: Any  # mpnn.data.LoaderOptions
    # tf.data injects a prefetch after the last asynchronous stage unless told not to.
    inject_prefetch: bool = True


def sweep_settings(threads: int) -> list[Setting]:
    """The settings of the sweep, in the order they are measured (``cache`` last, as it
    raises the process's peak memory)."""
    from mpnn.data import AUTOTUNE, LoaderOptions

    serial = dict(interleave_cycle=1, parallel_reads=1, parallel_calls=1)
    default_cycle = LoaderOptions().interleave_cycle
    return [
        Setting(
            "none",
            "1 file at a time, 1 reader, 1 parse call, no prefetch",
            LoaderOptions(**serial, prefetch=0),
            inject_prefetch=False,
        ),
        Setting("prefetch", "as none, prefetch AUTOTUNE", LoaderOptions(**serial, prefetch=AUTOTUNE)),
        Setting(
            "threads",
            f"{threads} parallel reads, {threads} parse calls, prefetch {threads}",
            LoaderOptions(
                interleave_cycle=max(default_cycle, threads),
                parallel_reads=threads,
                parallel_calls=threads,
                prefetch=threads,
            ),
        ),
        Setting("autotune", "LoaderOptions defaults: reads, parse calls, prefetch AUTOTUNE", LoaderOptions()),
        Setting(
            "cache", "autotune + records cached in memory (as mpnn-train; after the first pass)",
            LoaderOptions(cache=True),
        ),
    ]


def measure(
    manifest: Any, split: str, batch_size: int, setting: Setting, repeats: int, warmup_batches: int, shuffle: bool
) -> dict[str, Any]:
    """Time `repeats` passes of one setting and batch size (see the module docstring)."""
    import tensorflow as tf

    from mpnn.data import manifest_dataset

    dataset, steps = manifest_dataset(
        manifest, split, batch_size, shuffle=shuffle, seed=0 if shuffle else None, options=setting.options
    )
    if not setting.inject_prefetch:
        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False
        dataset = dataset.with_options(options)
    iterator = iter(dataset.repeat())
    warmup = warmup_batches + (steps if setting.options.cache else 0)
    for _ in range(warmup):
        next(iterator)
    seconds, graphs = [], []
    for _ in range(repeats):
        count = 0
        start = time.perf_counter()
        for _ in range(steps):
            count += int(next(iterator)[1].shape[0])
        seconds.append(time.perf_counter() - start)
        graphs.append(count)
    del iterator, dataset
    graph_rates = [g / s for g, s in zip(graphs, seconds)]
    return {
        "setting": setting.name,
        "batch_size": batch_size,
        "batches_per_pass": steps,
        "graphs_per_pass": graphs[0],
        "warmup_batches": warmup,
        "seconds": seconds,
        "graphs_per_second": median(graph_rates),
        "batches_per_second": median([steps / s for s in seconds]),
        "peak_rss_kib": host.peak_rss_kib(),
    }


def run(options: LoaderBenchOptions) -> dict[str, Any]:
    """Run the sweep; returns the report's benchmark-specific part (rates in graphs/s and
    batches/s, times in seconds, peak memory in KiB; `mpnn.bench.common.make_report`
    completes it)."""
    from mpnn.data import Manifest

    manifest = Manifest.load(options.data)
    files, counts = manifest.split(options.split)
    settings = [s for s in sweep_settings(options.threads) if s.name in options.settings]
    results = []
    for setting in settings:
        for batch_size in options.batch_sizes:
            result = measure(
                manifest, options.split, batch_size, setting, options.repeats, options.warmup_batches, options.shuffle
            )
            if result["graphs_per_pass"] != sum(counts):
                log.warning("%s: a pass yielded %d graphs, the manifest lists %d", setting.name,
                            result["graphs_per_pass"], sum(counts))
            log.info(
                "%-8s batch %5d: %10.1f graphs/s %8.2f batches/s", setting.name, batch_size,
                result["graphs_per_second"], result["batches_per_second"],
            )
            results.append(result)
    return {
        "data": {
            "manifest": os.path.abspath(manifest.path),
            "split": options.split,
            "records": sum(counts),
            "shards": len(files),
            "compression": manifest.compression,
        },
        "parameters": {
            "batch_sizes": list(options.batch_sizes),
            "repeats": options.repeats,
            "warmup_batches": options.warmup_batches,
            "threads": options.threads,
            "shuffle": options.shuffle,
        },
        "settings": {
            s.name: {
                "description": s.description,
                "loader_options": dataclasses.asdict(s.options),
                "inject_prefetch": s.inject_prefetch,
            }
            for s in settings
        },
        "results": results,
    }


def format_report(report: dict[str, Any]) -> str:
    data, parameters = report["data"], report["parameters"]
    title = (
        f"loader: {data['manifest']} split {data['split']}, {data['records']:,} graphs in {data['shards']} "
        f"shard(s), compression {data['compression']}; median of {parameters['repeats']} pass(es) after "
        f"{parameters['warmup_batches']} warm-up batches"
    )
    rows = [
        (
            r["setting"],
            r["batch_size"],
            f"{r['graphs_per_second']:,.0f}",
            f"{r['batches_per_second']:,.2f}",
            mib(r["peak_rss_kib"]),
        )
        for r in report["results"]
    ]
    table = format_table(("setting", "batch", "graphs/s", "batches/s", "peak RSS MiB"), rows)
    legend = "\n".join(f"  {name}: {s['description']}" for name, s in report["settings"].items())
    return f"{title}\n\n{table}\n\nsettings:\n{legend}\npeak RSS: of the process so far (ru_maxrss)"
