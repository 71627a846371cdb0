"""``mpnn-bench train``: training throughput (forward, backward, optimiser step) in graphs/s
and atoms/s.

Builds the model of the data set's manifest (`mpnn.models.build_from_manifest`) for each
width and batch size, compiles it as ``mpnn-train`` does (Adam, MAE loss, the optimiser
wrapped by `mpnn.distributed.distributed_optimizer`; a model that sees geometry trains as
`mpnn.forces.ForceTrainer`, on energies and, where the records have them, forces, the
double backward pass included) and feeds it the project's loader (shuffled,
records cached in memory, repeated). Untimed: one pass over the data (it fills the cache,
as from ``mpnn-train``'s second epoch on) and ``--warmup-steps`` training steps; timed:
``--steps`` training steps, ``--repeats`` times. Graphs are counted from the length of
each batch's target; the figure is the median over the repeats.

``--variants`` compares implementations of the same model (model options such as
``message_steps=8``, and ``batch_cut=K``, the groups each batch is cut into for training,
`mpnn.batch_cut`): every variant starts from the same
weights, and the repeats are interleaved (variant 1, variant 2, ..., variant 1, ...) so
that a machine whose load changes during the run slows all variants alike. Beside the
wall-clock rate the report gives the process's CPU seconds per step (all threads, the
loader's included), which changes little with the load of a shared machine.

Under ``horovodrun -np K`` (``--engine horovod``) or ``mpnn-launch -np K`` (``--engine
tf-distribute``) each rank trains on its own share of the records with gradients averaged
across ranks, as in ``mpnn-train`` (the step runs as the engine runs it,
`mpnn.distributed.run_step`); rank 0 gathers every rank's rate and reports them and
their sum. With ``--baseline`` (the report of a 1-rank run of the same sweep) each result
also gets its scaling efficiency, total graphs/s / (K x the 1-rank graphs/s): with the same
per-rank batch, the weak-scaling efficiency (``benchmarks/weak_scaling.sh`` alternates
such runs). Thread settings and the cut of each batch into groups are mpnn-train's
(`mpnn.distributed.thread_plan`: on 2 cores, one rank runs intra-op 1, inter-op 2 and
MPNN batches cut in two); ``--intra-op`` and ``--inter-op`` override the threads and a
variant such as ``batch_cut=1`` the cut.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from mpnn.bench.common import BenchError, format_table, mib
from mpnn.config import Engine, ModelName
from mpnn.host import peak_rss_kib
from mpnn.settings import AT_LEAST_0, AT_LEAST_1, EACH_AT_LEAST_1, setting
from mpnn.settings import check as check_settings

log = logging.getLogger("mpnn-bench.train")


@dataclass(frozen=True)
class TrainBenchOptions:
    """What ``mpnn-bench train`` measures (`run`).

    Attributes:
        data: the prepared data set (``manifest.json`` or its directory); its training split
            is read.
        family: the model family (`mpnn.models.FAMILIES`), or ``auto``: the manifest's default.
        widths: model widths (features per atom), one measurement each.
        message_steps: message steps of the families that have them; None: the family's default.
        batch_sizes: graphs per batch on each rank, one measurement each.
        steps: timed training steps per run.
        repeats: timed runs of `steps` steps per variant, interleaved across the variants; the
            median is reported.
        variants: model variants compared: ``default`` or comma-separated model options and
            ``batch_cut`` (`parse_variant`), each at most once.
        warmup_steps: untimed training steps before the first timed run.
        intra_op: intra-op threads; 0: mpnn-train's choice (`mpnn.distributed.thread_plan`).
        inter_op: inter-op threads; 0: mpnn-train's choice.
        baseline: the JSON report of a 1-rank run of the same sweep; each result then gets its
            scaling efficiency, graphs/s / (ranks x the baseline's graphs/s).
        engine: the distributed engine (`mpnn.config.Engine`), as mpnn-train's.
        data_threads: tf.data's thread pool per rank; 0: tf.data's default (one per core).

    Raises:
        BenchError: `variants` lists a variant twice.
    """

    data: str = setting(help="prepared data set (manifest.json or its directory)")
    family: str = setting("auto", "model family, or auto (the manifest's default)", choices=ModelName.values())
    widths: tuple[int, ...] = setting((32, 64), "model widths (default 32 64)", EACH_AT_LEAST_1)
    message_steps: int | None = setting(None, "message steps of the mpnn (default: the model's)", AT_LEAST_1)
    batch_sizes: tuple[int, ...] = setting(
        (64, 256, 1024), "graphs per batch on each rank (default 64 256 1024)", EACH_AT_LEAST_1
    )
    steps: int = setting(30, "timed training steps (default 30)", AT_LEAST_1)
    repeats: int = setting(
        1, "timed runs of --steps steps per variant, interleaved across variants (default 1)", AT_LEAST_1
    )
    variants: tuple[str, ...] = setting(
        ("default",),
        "model variants to compare: 'default' or comma-separated model options and batch_cut, e.g. batch_cut=1 "
        "(default: default)",
    )
    warmup_steps: int = setting(5, "untimed steps first (default 5)", AT_LEAST_0)
    intra_op: int = setting(0, "intra-op threads (0: mpnn-train's choice, see mpnn.distributed.thread_plan)", AT_LEAST_0)
    inter_op: int = setting(0, "inter-op threads (0: mpnn-train's choice, see mpnn.distributed.thread_plan)", AT_LEAST_0)
    baseline: str | None = setting(
        None,
        "report of a 1-rank run of the same sweep: each result then gets its scaling efficiency, graphs/s / (ranks x "
        "the baseline's graphs/s); for weak scaling run both with the same per-rank batch and threads",
    )
    engine: str = setting("auto", "distributed engine, as mpnn-train's --engine (default auto)", choices=Engine.values())
    data_threads: int = setting(
        0, "tf.data thread pool size per rank (0: tf.data's default, one per core)", AT_LEAST_0
    )

    def __post_init__(self) -> None:
        check_settings(self)
        if len(set(self.variants)) != len(self.variants):
            raise BenchError(f"--variants lists a variant twice: {list(self.variants)}")


def parse_variant(text: str) -> dict[str, Any]:
    """``"a=1,b=false"`` -> ``{"a": 1, "b": False}`` (``"default"``: no options).

    Values are read as JSON where they parse (numbers, true/false), else kept as strings.
    """
    if text == "default":
        return {}
    options: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"variant {text!r}: expected key=value items separated by commas, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def message_steps(model_name: str, requested: int | None) -> int | None:
    """The `requested` message steps (None: the model's default) for a model family that has
    the option, else None."""
    from mpnn import models

    family = models.family(model_name)
    if "message_steps" not in family.option_names:
        return None
    return requested if requested is not None else family.options().message_steps


def measure(manifest: Any, model_name: str, width: int, batch_size: int, options: TrainBenchOptions,
            rank: int, size: int, batch_cut: int) -> list[dict[str, Any]]:
    """Rates of one rank for one width and batch size, one entry per variant (see the
    module docstring); training cuts batches into `batch_cut` groups (for the models that
    take a cut, `mpnn.models.batch_cut_for`) unless a variant says otherwise."""
    import tensorflow as tf

    from mpnn import distributed, models
    from mpnn.batch_cut import cut_batch_trainer
    from mpnn.data import LoaderOptions, manifest_dataset
    from mpnn.forces import force_trainer, takes_positions
    from mpnn.training import LOSS_CLASSES

    dataset = iterator = None
    steps: dict[str, Any] = {}
    parameters: dict[str, int] = {}
    steps_option = message_steps(model_name, options.message_steps)
    model_options = {"width": width} if steps_option is None else {"width": width, "message_steps": steps_option}
    for variant in options.variants:
        variant_options = parse_variant(variant)
        cut = variant_options.pop("batch_cut", models.batch_cut_for(model_name, batch_cut))
        with distributed.scope():
            try:
                config = models.model_config(model_name, {**model_options, **variant_options})
                tf.keras.utils.set_random_seed(0)  # every variant starts from the same weights
                network = models.build_from_manifest(model_name, config, manifest)
                if takes_positions(network):
                    model = force_trainer(network, cut, config.force_weight)
                else:
                    model = cut_batch_trainer(network, cut)
            except (TypeError, ValueError) as exc:
                raise BenchError(f"variant {variant!r}: {exc}") from None
            optimizer = distributed.distributed_optimizer(tf.keras.optimizers.Adam(1e-3))
            model.compile(optimizer=optimizer, loss=LOSS_CLASSES["mae"]())
        if dataset is None:
            loader = LoaderOptions(cache=True, threads=options.data_threads)
            dataset, steps_per_pass = manifest_dataset(manifest, "train", batch_size, shuffle=True, seed=0, rank=rank,
                                                       size=size, options=loader,
                                                       entries=models.batch_entries(network.input_names, manifest))
            dataset = distributed.distribute(models.only_model_inputs(dataset, model).repeat())
            iterator = iter(dataset)
            for _ in range(steps_per_pass):  # fills the cache
                next(iterator)
        # A tf.function around Keras's own `train_step` (what `fit` runs each step), traced once
        # for the dataset's element spec so that batches of different atom counts do not retrace;
        # `train_on_batch` would add per-call Python data handling that `fit` does not have.
        steps[variant] = tf.function(lambda x, y, model=model: distributed.run_step(model.train_step, (x, y)),
                                     input_signature=list(iterator.element_spec))
        parameters[variant] = int(model.count_params())
        for _ in range(options.warmup_steps):
            steps[variant](*next(iterator))
    timings: dict[str, list[tuple[int, int, float, float]]] = {variant: [] for variant in options.variants}
    for _ in range(options.repeats):
        for variant in options.variants:
            timings[variant].append(_time_steps(steps[variant], iterator, options.steps))
    results = []
    for variant in options.variants:
        rates = [graphs / seconds for graphs, _, seconds, _ in timings[variant]]
        median_run = sorted(range(len(rates)), key=rates.__getitem__)[len(rates) // 2]
        graphs, atoms, seconds, cpu_seconds = timings[variant][median_run]
        results.append({
            "rank": rank, "variant": variant, "width": width, "batch_size": batch_size,
            "parameters": parameters[variant], "steps": options.steps, "graphs": graphs, "atoms": atoms,
            "seconds": seconds, "graphs_per_second": graphs / seconds, "atoms_per_second": atoms / seconds,
            "steps_per_second": options.steps / seconds,
            "cpu_seconds_per_step": cpu_seconds / options.steps, "repeats_graphs_per_second": rates,
            "peak_rss_kib": peak_rss_kib(),
        })
    return results


def _time_steps(train_step: Any, iterator: Any, steps: int) -> tuple[int, int, float, float]:
    """Run `steps` training steps: (graphs, atoms, wall seconds, CPU seconds of this process)."""
    import tensorflow as tf

    from mpnn import distributed

    graphs = atoms = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        inputs, target = next(iterator)
        energy = target[0] if isinstance(target, tuple) else target  # (energy, forces) with forces
        graphs += int(tf.shape(distributed.local(energy))[0])
        atoms += int(tf.shape(distributed.local(inputs["node_graph_indices"]))[0])
        logs = train_step(inputs, target)
    float(logs["loss"])  # wait for the last step
    return graphs, atoms, time.perf_counter() - start, time.process_time() - cpu_start


def baseline_rates(path: str, options: TrainBenchOptions) -> dict[tuple[str, int, int], float]:
    """Graphs/s of a 1-rank ``mpnn-bench train`` report by (variant, width, batch size),
    for every combination this sweep measures.

    Raises:
        BenchError: the file is not such a report or lacks one of the combinations.
    """
    try:
        with open(path) as handle:
            report = json.load(handle)
        if report.get("benchmark") != "train":
            raise BenchError(f"--baseline {path}: not an mpnn-bench train report")
        if report["parameters"]["ranks"] != 1:
            raise BenchError(f"--baseline {path}: a run of {report['parameters']['ranks']} ranks, not 1")
        rates = {(r["variant"], r["width"], r["batch_size"]): r["graphs_per_second"] for r in report["results"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BenchError(f"--baseline {path}: cannot read an mpnn-bench train report ({exc})") from None
    for key in itertools.product(options.variants, options.widths, options.batch_sizes):
        if key not in rates:
            raise BenchError(f"--baseline {path}: no result for variant {key[0]!r}, width {key[1]}, batch {key[2]}")
    return rates


def run(options: TrainBenchOptions) -> dict[str, Any] | None:
    """Run the sweep; returns the report's benchmark-specific part (rates in graphs/s, atoms/s
    and steps/s, times in seconds, peak memory in KiB; `mpnn.bench.common.make_report`
    completes it) on rank 0 only: the other ranks return None, so that one process prints
    and writes the report."""
    from mpnn import distributed, models
    from mpnn.data import Manifest

    # Before the first TensorFlow op (the runtime reads the thread settings once, when it
    # starts), and the same choice as mpnn-train's.
    threads = distributed.init(options.intra_op, options.inter_op, engine=options.engine)
    rank, size = distributed.rank(), distributed.size()
    baseline = baseline_rates(options.baseline, options) if options.baseline else {}
    manifest = Manifest.load(options.data)
    try:
        model_name = models.choose_model(options.family, manifest)
    except ValueError as exc:
        raise BenchError(f"{manifest.path}: {exc}") from None
    results = []
    for width in options.widths:
        for batch_size in options.batch_sizes:
            mine = measure(manifest, model_name, width, batch_size, options, rank, size, threads.batch_cut)
            gathered = distributed.allgather_object(mine, f"bench_{width}_{batch_size}") if size > 1 else [mine]
            for index, variant in enumerate(options.variants):
                ranks = [per_rank[index] for per_rank in gathered]
                total = sum(r["graphs_per_second"] for r in ranks)
                atoms_total = sum(r["atoms_per_second"] for r in ranks)
                if rank == 0:
                    log.info("%s width %4d batch %5d: %10.1f graphs/s over %d rank(s)",
                             variant, width, batch_size, total, size)
                results.append({**{k: ranks[0][k] for k in ("variant", "width", "batch_size", "parameters", "steps")},
                                "graphs_per_second": total, "atoms_per_second": atoms_total,
                                "steps_per_second": min(r["steps_per_second"] for r in ranks),
                                "cpu_seconds_per_step": max(r["cpu_seconds_per_step"] for r in ranks),
                                "peak_rss_kib": max(r["peak_rss_kib"] for r in ranks), "per_rank": ranks})
                if baseline:
                    results[-1]["scaling_efficiency"] = total / (size * baseline[variant, width, batch_size])
    if rank != 0:
        return None  # only rank 0 reports
    return {
        "data": {"manifest": os.path.abspath(manifest.path), "split": "train",
                 "records": manifest.split_records("train")},
        "model": model_name,
        "parameters": {
            "widths": list(options.widths), "message_steps": message_steps(model_name, options.message_steps),
            "batch_sizes": list(options.batch_sizes), "steps": options.steps, "warmup_steps": options.warmup_steps,
            "repeats": options.repeats, "variants": list(options.variants),
            "intra_op_threads": threads.intra_op_threads, "inter_op_threads": threads.inter_op_threads,
            "batch_cut": threads.batch_cut,
            "data_threads": options.data_threads, "ranks": size,
            "baseline": os.path.abspath(options.baseline) if options.baseline else None,
            "optimizer": "adam", "loss": "mae", "engine": distributed.engine_name(),
        },
        "results": results,
    }


def format_report(report: dict[str, Any]) -> str:
    data, parameters = report["data"], report["parameters"]
    title = (
        f"train: {report['model']} on {data['manifest']} ({data['records']:,} training graphs), "
        f"{parameters['ranks']} rank(s), threads intra-op {parameters['intra_op_threads'] or 'default'} "
        f"inter-op {parameters['inter_op_threads'] or 'default'} "
        f"batch cut {parameters.get('batch_cut', 1)} "
        f"tf.data {parameters.get('data_threads') or 'default'}; median of {parameters['repeats']} run(s) of "
        f"{parameters['steps']} timed steps after {parameters['warmup_steps']} warm-up steps"
    )
    multi = parameters["ranks"] > 1
    scaled = any("scaling_efficiency" in r for r in report["results"])
    first = {}  # the first variant's rate for each width and batch size
    rows = []
    for r in report["results"]:
        reference = first.setdefault((r["width"], r["batch_size"]), r["graphs_per_second"])
        per_rank = [" ".join(f"{x['graphs_per_second']:,.0f}" for x in r["per_rank"])] if multi else []
        rows.append((r["variant"], r["width"], r["batch_size"], f"{r['parameters']:,}",
                     f"{r['graphs_per_second']:,.0f}", f"{r.get('atoms_per_second', 0):,.0f}", *per_rank,
                     f"{r['graphs_per_second'] / reference:.2f}",
                     *([f"{100 * r['scaling_efficiency']:.0f}%"] if scaled else []),
                     f"{r['steps_per_second']:,.2f}", f"{1000 * r['cpu_seconds_per_step']:,.0f}",
                     mib(r["peak_rss_kib"])))
    headers = ("variant", "width", "batch", "parameters", "graphs/s", "atoms/s", *(["graphs/s per rank"] if multi else []),
               "vs first", *(["efficiency"] if scaled else []), "steps/s", "CPU ms/step", "peak RSS MiB")
    note = ("graphs/s, atoms/s: summed over ranks; vs first: relative to the first variant; "
            + ("efficiency: graphs/s / (ranks x the --baseline run's); " if scaled else "")
            + "steps/s: the slowest rank; "
            "CPU ms/step: CPU time of the process (all threads), largest rank; peak RSS: largest rank, process so far")
    return f"{title}\n\n{format_table(headers, rows)}\n\n{note}"
