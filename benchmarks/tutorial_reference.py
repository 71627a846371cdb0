"""Time the ExaLearn design tutorial's own loader and MPNN on this machine.

Issue #5 sets its targets relative to the tutorial (github.com/exalearn/design-tutorial,
Apache-2.0): its `tf.data` loader and its MPNN (32 features, 8 message steps). Figures
taken on another machine cannot be compared with ours, so this script runs the
tutorial's code itself, from a checkout the user provides, on the same file we ship
(``data/samples/water/water_clusters.proto.gz`` is the tutorial's
``mpnn/profile-data/water_clusters.proto.gz``). Nothing of the tutorial is copied here:
the script imports ``graphsage.mpnn.data`` and ``graphsage.mpnn.layers`` from the
checkout and only drives them, the way the tutorial's ``profile_data_loader.py`` and
``profile_train.py`` do::

    git clone https://github.com/exalearn/design-tutorial /tmp/design-tutorial
    python benchmarks/tutorial_reference.py --tutorial /tmp/design-tutorial loader --ours work/water-all
    python benchmarks/tutorial_reference.py --tutorial /tmp/design-tutorial train

``loader``: the five pipelines of ``profile_data_loader.py`` (``standard``: GZIP file, no
parallelism; ``no-compression``; ``prefetch``; ``autotune``; ``fixed-N``), each batch size
timed two ways: ``fresh``, the tutorial's protocol (a new iterator for one pass over the
file, so the pipeline's start-up is included), and ``window``, the protocol of
``mpnn-bench loader`` (one iterator over the repeated pipeline, warm-up batches untimed,
windows of one pass); ``--ours DIR ...`` times mpnn-hpc's loader on prepared data sets
in the same run, the same two ways (prepare the same file with ``mpnn-prep-water
data/samples/water/water_clusters.proto.gz -o work/water-all --fractions 1 0 0``).

``train``: the model of the tutorial's ``0_create-models.ipynb`` (``GraphNetwork(2, 2,
32, 8)`` on squeezed inputs), compiled as ``profile_train.py`` does
(Adam, mean squared error) and fed by the tutorial's ``make_data_loader`` (AUTOTUNE
threads, prefetch 16) on the uncompressed file, repeated so that a timed run may span
passes; besides graphs/s it reports the process's CPU seconds per step (all threads), which
the load of a shared machine changes less. The report is JSON with the machine and date
(`mpnn.bench.common.environment`).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mpnn.bench.common import environment, format_table, median, write_report  # noqa: E402
from mpnn.host import peak_rss_kib  # noqa: E402

DEFAULT_RECORDS = os.path.join(REPO, "data", "samples", "water", "water_clusters.proto.gz")


def tutorial_modules(checkout: str) -> tuple[Any, Any]:
    """``graphsage.mpnn.data`` and ``graphsage.mpnn.layers`` from the tutorial checkout."""
    if not os.path.isdir(os.path.join(checkout, "graphsage", "mpnn")):
        raise SystemExit(f"{checkout}: not a checkout of exalearn/design-tutorial (no graphsage/mpnn)")
    sys.path.insert(0, os.path.abspath(checkout))
    from graphsage.mpnn import data, layers

    return data, layers


def loader_pipelines(data: Any, gz_path: str, plain_path: str, threads: int) -> dict[str, Callable[[int], Any]]:
    """The pipelines of the tutorial's ``profile_data_loader.py``, by name, as functions of
    the batch size."""
    import tensorflow as tf

    steps = (data.parse_records, data.prepare_for_batching, data.combine_graphs, data.make_training_tuple)

    def pipeline(path: str, compression: str, parallel: int | None, prefetch: bool) -> Callable[[int], Any]:
        def build(batch_size: int) -> Any:
            dataset = tf.data.TFRecordDataset(path, compression).batch(batch_size)
            for step in steps:
                dataset = dataset.map(step, parallel) if parallel is not None else dataset.map(step)
            return dataset.prefetch(8) if prefetch else dataset

        return build

    return {
        "standard": pipeline(gz_path, "GZIP", None, False),
        "no-compression": pipeline(plain_path, "", None, False),
        "prefetch": pipeline(plain_path, "", None, True),
        "autotune": pipeline(plain_path, "", tf.data.AUTOTUNE, True),
        f"fixed-{threads}": pipeline(plain_path, "", threads, True),
    }


def graphs_in(batch: Any) -> int:
    return int(batch[1].shape[0])


def time_fresh(dataset: Any) -> float:
    """Graphs/s of one pass with a new iterator (the tutorial's protocol)."""
    start = time.perf_counter()
    graphs = sum(graphs_in(batch) for batch in dataset)
    return graphs / (time.perf_counter() - start)


def time_windows(dataset: Any, batches_per_pass: int, repeats: int, warmup: int) -> list[float]:
    """Graphs/s of `repeats` windows of one pass on one iterator (``mpnn-bench loader``)."""
    iterator = iter(dataset.repeat())
    for _ in range(warmup):
        next(iterator)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        graphs = sum(graphs_in(next(iterator)) for _ in range(batches_per_pass))
        rates.append(graphs / (time.perf_counter() - start))
    return rates


def our_pipelines(directories: list[str]) -> dict[str, Callable[[int], Any]]:
    """``mpnn.data.manifest_dataset`` (its defaults: AUTOTUNE) on the training split of
    each prepared data set, by name ``mpnn-hpc:<directory name>``."""
    from mpnn.data import Manifest, manifest_dataset

    def pipeline(manifest: Manifest) -> Callable[[int], Any]:
        return lambda batch_size: manifest_dataset(manifest, "train", batch_size)[0]

    return {f"mpnn-hpc:{os.path.basename(os.path.normpath(d))}": pipeline(Manifest.load(d)) for d in directories}


def run_loader(args: argparse.Namespace, data: Any, plain_path: str) -> list[dict[str, Any]]:
    results = []
    pipelines = {**loader_pipelines(data, args.records, plain_path, args.threads), **our_pipelines(args.ours)}
    for name, build in pipelines.items():
        for batch_size in args.batch_sizes:
            dataset = build(batch_size)
            batches_per_pass = sum(1 for _ in dataset)
            fresh = [time_fresh(dataset) for _ in range(args.repeats)]
            window = time_windows(dataset, batches_per_pass, args.repeats, warmup=5)
            results.append({
                "pipeline": name, "batch_size": batch_size, "fresh_graphs_per_second": fresh,
                "window_graphs_per_second": window, "peak_rss_kib": peak_rss_kib(),
            })
            print(f"{name:15s} batch {batch_size:5d}: fresh {median(fresh):10,.0f}  window {median(window):10,.0f}"
                  " graphs/s", flush=True)
    return results


def build_tutorial_model(layers: Any, features: int, message_steps: int) -> Any:
    """The MPNN of the tutorial's ``0_create-models.ipynb`` (2 atom and 2 bond types)."""
    import tensorflow as tf

    inputs = {
        "node_graph_indices": tf.keras.Input(shape=(1,), name="node_graph_indices", dtype="int32"),
        "atom": tf.keras.Input(shape=(1,), name="atom", dtype="int32"),
        "bond": tf.keras.Input(shape=(1,), name="bond", dtype="int32"),
        "connectivity": tf.keras.Input(shape=(2,), name="connectivity", dtype="int32"),
    }
    squeezed = [layers.Squeeze(axis=1)(inputs[name]) for name in ("atom", "bond", "node_graph_indices")]
    output = layers.GraphNetwork(2, 2, features, message_steps, name="mpnn")([*squeezed, inputs["connectivity"]])
    return tf.keras.Model(inputs=list(inputs.values()), outputs=output)


def run_train(args: argparse.Namespace, data: Any, layers: Any, plain_path: str) -> list[dict[str, Any]]:
    import tensorflow as tf

    results = []
    for batch_size in args.batch_sizes:
        model = build_tutorial_model(layers, args.features, args.message_steps)
        model.compile(tf.keras.optimizers.Adam(), "mean_squared_error")
        loader = data.make_data_loader(plain_path, batch_size=batch_size).repeat().prefetch(16)
        model.fit(loader, epochs=1, steps_per_epoch=args.warmup_steps, verbose=0)
        rates, cpu_per_step = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            model.fit(loader, epochs=1, steps_per_epoch=args.steps, verbose=0)
            rates.append(args.steps * batch_size / (time.perf_counter() - start))
            cpu_per_step.append((time.process_time() - cpu_start) / args.steps)
        results.append({
            "batch_size": batch_size, "features": args.features, "message_steps": args.message_steps,
            "parameters": int(model.count_params()), "graphs_per_second": rates,
            "cpu_seconds_per_step": cpu_per_step, "peak_rss_kib": peak_rss_kib(),
        })
        print(f"train batch {batch_size:5d}: {median(rates):8,.0f} graphs/s (runs: "
              f"{', '.join(f'{r:,.0f}' for r in rates)}); CPU {1000 * median(cpu_per_step):.0f} ms/step", flush=True)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tutorial", required=True, help="checkout of github.com/exalearn/design-tutorial")
    parser.add_argument("--records", default=DEFAULT_RECORDS, help="the tutorial's water_clusters.proto.gz")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell; the median is reported")
    parser.add_argument("--intra-op", type=int, default=0, help="intra-op threads (0: TF default)")
    parser.add_argument("--inter-op", type=int, default=0, help="inter-op threads (0: TF default)")
    parser.add_argument("--output", help="JSON report (default tutorial-<what>.json)")
    sub = parser.add_subparsers(dest="what", required=True)
    loader = sub.add_parser("loader", help="the tutorial's profile_data_loader sweep")
    loader.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1024])
    loader.add_argument("--threads", type=int, default=2, help="threads of the fixed-N pipeline (default 2)")
    loader.add_argument(
        "--ours", nargs="*", default=[], metavar="DIR",
        help="also time mpnn-hpc's loader on these prepared data sets (training split), in the same way",
    )
    train = sub.add_parser("train", help="training rate of the tutorial's MPNN")
    train.add_argument("--batch-sizes", type=int, nargs="+", default=[256])
    train.add_argument("--features", type=int, default=32)
    train.add_argument("--message-steps", type=int, default=8)
    train.add_argument("--steps", type=int, default=100, help="timed steps per run")
    train.add_argument("--warmup-steps", type=int, default=5)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import tensorflow as tf

    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    data, layers = tutorial_modules(args.tutorial)
    with tempfile.TemporaryDirectory() as scratch:
        # The tutorial profiles the uncompressed file for every pipeline but "standard".
        plain_path = os.path.join(scratch, "water_clusters.proto")
        with gzip.open(args.records) as source, open(plain_path, "wb") as target:
            shutil.copyfileobj(source, target)
        results = run_loader(args, data, plain_path) if args.what == "loader" else run_train(args, data, layers,
                                                                                              plain_path)
    report = {"benchmark": f"tutorial-{args.what}", **environment(), "records": os.path.abspath(args.records),
              "parameters": {k: v for k, v in vars(args).items() if k != "output"}, "results": results}
    output = args.output or f"tutorial-{args.what}.json"
    write_report(output, report)
    if args.what == "loader":
        rows = [(r["pipeline"], r["batch_size"], f"{median(r['fresh_graphs_per_second']):,.0f}",
                 f"{median(r['window_graphs_per_second']):,.0f}") for r in results]
        print(format_table(("pipeline", "batch", "fresh graphs/s", "window graphs/s"), rows))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
