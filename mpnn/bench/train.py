"""``mpnn-bench train``: training throughput (forward, backward, optimiser step) in graphs/s.

Builds the model of the data set's manifest (`mpnn.models.build_from_manifest`) for each
width and batch size, compiles it as ``mpnn-train`` does (Adam, MAE loss, the optimiser
wrapped in `hvd.DistributedOptimizer`) and feeds it the project's loader (shuffled,
records cached in memory, repeated). Untimed: one pass over the data (it fills the cache,
as from ``mpnn-train``'s second epoch on) and ``--warmup-steps`` training steps; timed:
``--steps`` training steps. Graphs are counted from the length of each batch's target.

Under ``horovodrun -np K`` each rank trains on its own shard with gradients averaged
across ranks, as in ``mpnn-train``; rank 0 gathers every rank's rate and reports them and
their sum. Thread settings (``--intra-op``, ``--inter-op``; 0 = TensorFlow's default) are
applied before TensorFlow runs its first op.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

from mpnn.bench.common import BenchError, format_table, mib, non_negative_int, peak_rss_kib, positive_int

log = logging.getLogger("mpnn-bench.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data set (manifest.json or its directory)")
    parser.add_argument("--model", default="auto", help="mpnn, gat-lspe or auto (the manifest's default)")
    parser.add_argument("--widths", type=positive_int, nargs="+", default=[32, 64], metavar="W",
                        help="model widths (default %(default)s)")
    parser.add_argument("--message-steps", type=positive_int, default=4, help="message steps of the mpnn (default 4)")
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[64, 256, 1024], metavar="B",
                        help="graphs per batch on each rank (default %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=30, help="timed training steps (default 30)")
    parser.add_argument("--warmup-steps", type=non_negative_int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--intra-op", type=non_negative_int, default=0, help="intra-op threads (0: TF default)")
    parser.add_argument("--inter-op", type=non_negative_int, default=0, help="inter-op threads (0: TF default)")
    parser.add_argument("--data-threads", type=non_negative_int, default=0,
                        help="tf.data thread pool size per rank (0: tf.data's default, one per core)")


def measure(manifest: Any, model_name: str, width: int, batch_size: int, args: argparse.Namespace,
            rank: int, size: int) -> dict[str, Any]:
    """Rate of one rank for one width and batch size (see the module docstring)."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from mpnn import models
    from mpnn.data import LoaderOptions, manifest_dataset
    from mpnn.train import LOSSES, only_model_inputs

    options = {"width": width, "message_steps": args.message_steps} if model_name == "mpnn" else {"width": width}
    model = models.build_from_manifest(model_name, models.model_config(model_name, options), manifest.content)
    model.compile(optimizer=hvd.DistributedOptimizer(tf.keras.optimizers.Adam(1e-3)), loss=LOSSES["mae"]())
    dataset, steps_per_pass = manifest_dataset(manifest, "train", batch_size, shuffle=True, seed=0, rank=rank,
                                               size=size, options=LoaderOptions(cache=True, threads=args.data_threads))
    dataset = only_model_inputs(dataset, model).repeat()
    # A tf.function around Keras's own `train_step` (what `fit` runs each step), traced once
    # for the dataset's element spec so that batches of different atom counts do not retrace;
    # `train_on_batch` would add per-call Python data handling that `fit` does not have.
    train_step = tf.function(lambda x, y: model.train_step((x, y)), input_signature=list(dataset.element_spec))
    iterator = iter(dataset)
    for _ in range(steps_per_pass):  # fills the cache
        next(iterator)
    for _ in range(args.warmup_steps):
        train_step(*next(iterator))
    graphs = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        inputs, target = next(iterator)
        graphs += int(target.shape[0])
        logs = train_step(inputs, target)
    float(logs["loss"])  # wait for the last step
    seconds = time.perf_counter() - start
    return {
        "rank": rank, "width": width, "batch_size": batch_size, "parameters": int(model.count_params()),
        "steps": args.steps, "graphs": graphs, "seconds": seconds, "graphs_per_second": graphs / seconds,
        "steps_per_second": args.steps / seconds, "peak_rss_kib": peak_rss_kib(),
    }


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Run the sweep; returns the report's benchmark-specific part (on rank 0 only: the
    other ranks exit here, so that one process prints and writes the report)."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    # Before the first TensorFlow op: the runtime reads these once, when it starts.
    hvd.init()
    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)

    from mpnn import distributed, models
    from mpnn.data import Manifest

    rank, size = hvd.rank(), hvd.size()
    manifest = Manifest.load(args.data)
    try:
        model_name = models.choose_model(args.model, manifest.content)
    except ValueError as exc:
        raise BenchError(f"{manifest.path}: {exc}") from None
    results = []
    for width in args.widths:
        for batch_size in args.batch_sizes:
            mine = measure(manifest, model_name, width, batch_size, args, rank, size)
            ranks = distributed.allgather_object(mine, f"bench_{width}_{batch_size}") if size > 1 else [mine]
            total = sum(r["graphs_per_second"] for r in ranks)
            if rank == 0:
                log.info("width %4d batch %5d: %10.1f graphs/s over %d rank(s)", width, batch_size, total, size)
            results.append({**{k: mine[k] for k in ("width", "batch_size", "parameters", "steps")},
                            "graphs_per_second": total, "steps_per_second": min(r["steps_per_second"] for r in ranks),
                            "peak_rss_kib": max(r["peak_rss_kib"] for r in ranks), "per_rank": ranks})
    if rank != 0:
        return None  # only rank 0 reports
    return {
        "data": {"manifest": os.path.abspath(manifest.path), "split": "train",
                 "records": manifest.content["splits"]["train"]["records"]},
        "model": model_name,
        "parameters": {
            "widths": list(args.widths), "message_steps": args.message_steps if model_name == "mpnn" else None,
            "batch_sizes": list(args.batch_sizes), "steps": args.steps, "warmup_steps": args.warmup_steps,
            "intra_op_threads": args.intra_op, "inter_op_threads": args.inter_op,
            "data_threads": args.data_threads, "ranks": size,
            "optimizer": "adam", "loss": "mae",
        },
        "results": results,
    }


def format_report(report: dict[str, Any]) -> str:
    data, parameters = report["data"], report["parameters"]
    title = (
        f"train: {report['model']} on {data['manifest']} ({data['records']:,} training graphs), "
        f"{parameters['ranks']} rank(s), threads intra-op {parameters['intra_op_threads'] or 'default'} "
        f"inter-op {parameters['inter_op_threads'] or 'default'} "
        f"tf.data {parameters.get('data_threads') or 'default'}; "
        f"{parameters['steps']} timed steps after "
        f"{parameters['warmup_steps']} warm-up steps"
    )
    multi = parameters["ranks"] > 1
    rows = []
    for r in report["results"]:
        per_rank = [" ".join(f"{x['graphs_per_second']:,.0f}" for x in r["per_rank"])] if multi else []
        rows.append((r["width"], r["batch_size"], f"{r['parameters']:,}", f"{r['graphs_per_second']:,.0f}",
                     *per_rank, f"{r['steps_per_second']:,.2f}", mib(r["peak_rss_kib"])))
    headers = ("width", "batch", "parameters", "graphs/s", *(["graphs/s per rank"] if multi else []),
               "steps/s", "peak RSS MiB")
    note = "graphs/s: summed over ranks; steps/s: the slowest rank; peak RSS: largest rank, process so far"
    return f"{title}\n\n{format_table(headers, rows)}\n\n{note}"
