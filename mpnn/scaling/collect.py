"""``mpnn-scaling collect``: the study's run directories -> one table (CSV and Markdown).

One row per strategy x batch size x rank count, with the mean and the sample standard
deviation (n - 1) over the repeats that finished:

- ``dbs``, ``gbs``: graphs per rank per step and graphs per step over all ranks;
- ``train_seconds``: wall time of training (``metrics.json``, all epochs, validation
  included; evaluation and start-up excluded);
- ``epoch_seconds``, ``graphs_per_second``: per epoch from ``log.csv``, averaged over the
  epochs after the first (which also traces the model and fills the record cache), or the
  first when it is the only one; graphs/s counts training graphs over all ranks;
- ``time_gain_pct``: ``100 * (1 - T / T1)``, T1 the mean training time of the 1-rank runs of
  the same batch size (the 1-rank rows of dbs and gbs are the same runs);
- ``test_r2``, ``test_pearson_r``, ``test_mae``: on the test split (``metrics.json``);
- for data sets with a group (water: ``n_waters``; see `mpnn.metrics.group_metrics`):
  ``test_spearman`` and ``test_spearman_worst``, the within-group Spearman rank correlation
  (mean over groups weighted by size, and the worst group's), and ``test_low_tail_mae``,
  ``test_low_tail_bias``, the MAE and mean signed error (predicted - true) on the lowest 5%
  of each group by true value (weighted mean over groups);
- ``r2_loss_pct``, ``pearson_loss_pct``: ``100 * (M1 - M) / |M1|``, M1 the 1-rank mean;
  positive is worse than one rank.

Gains and losses are computed per run against the baseline's mean, so their spread is that
of the K-rank runs. Runs that are missing, unfinished or disagree with the plan are listed
(``problems``), never dropped silently.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass, field

from mpnn.errors import InputError
from mpnn.rundir import RunDir
from mpnn.scaling.plan import Run, Study, StudyError

TABLE_CSV = "scaling.csv"
TABLE_MD = "scaling.md"
RUNS_CSV = "runs.csv"
# Quantities of a row: name -> Markdown header.
QUANTITIES = {
    "train_seconds": "training time (s)",
    "epoch_seconds": "time per epoch (s)",
    "graphs_per_second": "graphs/s",
    "time_gain_pct": "time gain (%)",
    "test_r2": "test R^2",
    "r2_loss_pct": "R^2 loss (%)",
    "test_pearson_r": "test Pearson r",
    "pearson_loss_pct": "Pearson r loss (%)",
    "test_mae": "test MAE",
    "test_spearman": "within-group Spearman",
    "test_spearman_worst": "worst group's Spearman",
    "test_low_tail_mae": "low-5% MAE",
    "test_low_tail_bias": "low-5% bias",
}
# Measured per run; the others are derived against the 1-rank baseline.
MEASURED = ("train_seconds", "epoch_seconds", "graphs_per_second", "test_r2", "test_pearson_r", "test_mae",
            "test_spearman", "test_spearman_worst", "test_low_tail_mae", "test_low_tail_bias")
KEYS = ("strategy", "batch_size", "ranks", "dbs", "gbs")


@dataclass
class RunResult:
    """One planned run as found on disk. `status` is ``ok``, ``not started`` (no run
    directory), ``unfinished`` (no metrics.json) or ``invalid`` (unreadable, or not what
    the plan asked for; `problem` says why). Measured values are NaN where unknown."""

    run: Run
    status: str
    problem: str = ""
    epochs: int | None = None
    values: dict[str, float] = field(default_factory=dict)
    host: dict | None = None
    resumed_from_epoch: list[int] = field(default_factory=list)  # epochs at which a restart began


@dataclass
class Stat:
    """Mean and sample standard deviation (NaN below 2 values) of `n` values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return cls(math.nan, math.nan, 0)
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan, len(values))


@dataclass
class ScalingRow:
    """One line of the table: a strategy, batch size and rank count over its repeats.
    `batch_size` is ``--batch-size``; `repeats` counts the finished runs of `planned`;
    `missing` names the others; `stats` maps each of `QUANTITIES` to its `Stat`."""

    strategy: str
    batch_size: int
    ranks: int
    dbs: int
    gbs: int
    epochs: float
    repeats: int
    planned: int
    stats: dict[str, Stat]
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """Flat CSV row: keys, epochs, repeats, then ``<quantity>_mean`` and ``_std``."""
        row: dict[str, object] = {k: getattr(self, k) for k in (*KEYS, "epochs", "repeats", "planned")}
        for name in QUANTITIES:
            row[f"{name}_mean"], row[f"{name}_std"] = self.stats[name].mean, self.stats[name].std
        row["missing"] = ";".join(self.missing)
        return row


def read_run(run: Run, study_dir: str) -> RunResult:
    """Read one run directory (``metrics.json``, ``log.csv``, ``host_info.json``: `RunDir`)."""
    run_dir = RunDir(os.path.join(study_dir, run.run_dir))
    if not os.path.isdir(run_dir.path):
        return RunResult(run, "not started", f"{run_dir.path}: no run directory")
    metrics_path = run_dir.metrics_path
    if not run_dir.has_metrics():
        epochs = len(run_dir.log_rows())
        return RunResult(run, "unfinished", f"{metrics_path}: missing ({epochs} epoch(s) in log.csv)")
    try:
        metrics = run_dir.metrics()
        planned = (run.ranks, run.batch_per_rank, run.global_batch)
        found = (metrics["ranks"], metrics["batch_per_rank"], metrics["global_batch"])
        test = metrics.get("test", {})
        values = {"train_seconds": float(metrics["train_seconds"]), **test_values(test)}
        epochs = int(metrics["epochs_run"])
    except InputError as exc:
        return RunResult(run, "invalid", str(exc))
    except (ValueError, KeyError, TypeError) as exc:
        return RunResult(run, "invalid", f"{metrics_path}: cannot read ({exc!r})")
    if found != planned:
        return RunResult(run, "invalid", f"{metrics_path}: ranks, batch per rank, global batch {found}, "
                                         f"planned {planned}")
    log_rows = run_dir.log_rows()
    steady = log_rows[1:] or log_rows
    for column in ("epoch_seconds", "graphs_per_second"):
        values[column] = statistics.fmean(float(r[column]) for r in steady) if steady else math.nan
    problem = "" if test else f"{metrics_path}: no test split"
    return RunResult(run, "ok", problem, epochs, values, _host_info(run_dir), metrics.get("resumed_from_epoch", []))


def test_values(test: dict) -> dict[str, float]:
    """The measured test quantities of one run's ``metrics.json`` test section (NaN where
    it has none, e.g. no groups)."""
    summary = test.get("group_summary", {})
    weighted, worst = summary.get("weighted", {}), summary.get("worst", {})

    def number(value) -> float:
        return math.nan if value is None else float(value)

    return {
        "test_r2": number(test.get("r2")),
        "test_pearson_r": number(test.get("pearson_r")),
        "test_mae": number(test.get("mae")),
        "test_spearman": number(weighted.get("spearman")),
        "test_spearman_worst": number((worst.get("spearman") or {}).get("value")),
        "test_low_tail_mae": number(weighted.get("low_tail_mae")),
        "test_low_tail_bias": number(weighted.get("low_tail_bias")),
    }


def _host_info(run_dir: RunDir) -> dict | None:
    try:
        return run_dir.host_info()
    except InputError:
        return None


def aggregate(study: Study, results: list[RunResult]) -> list[ScalingRow]:
    """The table's rows, ordered by strategy, batch size and rank count."""
    rows = []
    for strategy in study.strategies:
        for batch in study.batch_sizes:
            baseline = [r for r in results if r.status == "ok" and r.run.ranks == 1 and r.run.batch_size == batch]
            base = {name: Stat.of([r.values[name] for r in baseline]).mean for name in MEASURED}
            for ranks in study.ranks:
                group = [r for r in results if strategy in r.run.serves and r.run.batch_size == batch
                         and r.run.ranks == ranks]
                if not group:
                    continue
                ok = [r for r in group if r.status == "ok"]
                per_run: dict[str, list[float]] = {name: [r.values[name] for r in ok] for name in MEASURED}
                per_run["time_gain_pct"] = [100 * (1 - t / base["train_seconds"]) for t in per_run["train_seconds"]]
                per_run["r2_loss_pct"] = [_loss(base["test_r2"], m) for m in per_run["test_r2"]]
                per_run["pearson_loss_pct"] = [_loss(base["test_pearson_r"], m) for m in per_run["test_pearson_r"]]
                rows.append(ScalingRow(
                    strategy=strategy, batch_size=batch, ranks=ranks, dbs=group[0].run.batch_per_rank,
                    gbs=group[0].run.global_batch, epochs=Stat.of([float(r.epochs) for r in ok]).mean,
                    repeats=len(ok), planned=len(group), stats={n: Stat.of(per_run[n]) for n in QUANTITIES},
                    missing=[f"{r.run.id} ({r.status})" for r in group if r.status != "ok"],
                ))
    return rows


def _loss(baseline: float, value: float) -> float:
    """Loss in % of the baseline's magnitude (positive: worse than the baseline)."""
    return 100 * (baseline - value) / abs(baseline) if baseline and not math.isnan(baseline) else math.nan


def collect(study: Study, runs: list[Run], study_dir: str) -> tuple[list[ScalingRow], list[RunResult]]:
    """Read every planned run and aggregate: (table rows, per-run results)."""
    results = [read_run(run, study_dir) for run in runs]
    return aggregate(study, results), results


def write_csv(path: str, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else list(KEYS))
        writer.writeheader()
        writer.writerows(rows)


def runs_table(results: list[RunResult]) -> list[dict[str, object]]:
    """One flat row per planned run (``runs.csv``): plan, status and measured values."""
    return [{"id": r.run.id, "ranks": r.run.ranks, "strategy": r.run.strategy, "batch_size": r.run.batch_size,
             "repeat": r.run.repeat, "seed": r.run.seed, "status": r.status, "epochs": r.epochs,
             **{name: r.values.get(name, math.nan) for name in MEASURED},
             "resumed_from_epoch": ";".join(map(str, r.resumed_from_epoch)), "problem": r.problem}
            for r in results]


def read_table(path: str) -> list[ScalingRow]:
    """Read a ``scaling.csv`` written by `write_outputs` back into rows (for notebooks)."""
    try:
        with open(path, newline="") as handle:
            records = list(csv.DictReader(handle))
        return [ScalingRow(
            strategy=rec["strategy"], batch_size=int(rec["batch_size"]), ranks=int(rec["ranks"]),
            dbs=int(rec["dbs"]), gbs=int(rec["gbs"]), epochs=float(rec["epochs"]), repeats=int(rec["repeats"]),
            planned=int(rec["planned"]), missing=[m for m in rec["missing"].split(";") if m],
            # Tables written before a quantity existed lack its columns: NaN.
            stats={n: Stat(float(rec.get(f"{n}_mean", "nan")), float(rec.get(f"{n}_std", "nan")), int(rec["repeats"]))
                   for n in QUANTITIES},
        ) for rec in records]
    except (OSError, KeyError, ValueError) as exc:
        raise StudyError(f"{path}: not a table written by mpnn-scaling collect ({exc!r})") from None


def markdown(study: Study, rows: list[ScalingRow], results: list[RunResult]) -> str:
    """The table as Markdown, with the study's settings, the machine and the problems."""
    hosts = {(h.get("host"), h.get("cpu"), h.get("cores"), tuple(h.get("gpus") or ())) for h in
             (r.host for r in results if r.host)}
    dates = sorted(r.host["started"][:10] for r in results if r.host and r.host.get("started"))
    lines = [f"Scaling study: data `{study.data}`, family {study.family}, {study.epochs} epochs planned, "
             f"{study.repeats} repeat(s) with seeds {study.seed} to {study.seed + study.repeats - 1}."]
    for host, cpu, cores, gpus in sorted(hosts, key=str):
        lines.append(f"Machine: {host}, {cpu}, {cores} cores" + (f", GPUs {', '.join(gpus)}" if gpus else "") + ".")
    if dates:
        lines.append(f"Runs started {dates[0]}" + (f" to {dates[-1]}." if dates[-1] != dates[0] else "."))
    lines += ["", "| strategy | batch | ranks | DBS | GBS | epochs | runs | "
              + " | ".join(QUANTITIES.values()) + " |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in QUANTITIES) + " |"]
    for row in rows:
        cells = [row.strategy, row.batch_size, row.ranks, row.dbs, row.gbs, _number(row.epochs),
                 f"{row.repeats}/{row.planned}", *(_stat(name, row.stats[name]) for name in QUANTITIES)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Mean ± sample standard deviation over the finished repeats (runs: finished/planned). "
              "Time gain: 100 (1 - T / T1) against the mean 1-rank time T1 of the same batch; metric loss: "
              "100 (M1 - M) / |M1| (positive is worse). The 1-rank rows of dbs and gbs are the same runs. "
              "Time per epoch and graphs/s: epochs after the first."]
    problems = [r for r in results if r.status != "ok" or r.problem]
    if problems:
        lines += ["", "Problems:", ""] + [f"- {r.run.id}: {r.status}; {r.problem}" for r in problems]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:g}"


def _stat(name: str, stat: Stat) -> str:
    if math.isnan(stat.mean):
        return ""
    digits = {"test_r2": 4, "test_pearson_r": 4, "graphs_per_second": 0, "time_gain_pct": 1,
              "test_mae": 3, "test_spearman": 3, "test_spearman_worst": 3}.get(name, 2)
    mean = f"{stat.mean:,.{digits}f}"
    return mean if math.isnan(stat.std) else f"{mean} ± {stat.std:,.{digits}f}"


def write_outputs(study: Study, rows: list[ScalingRow], results: list[RunResult], out_dir: str) -> list[str]:
    """Write ``scaling.csv``, ``scaling.md`` and ``runs.csv`` into `out_dir`; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name) for name in (TABLE_CSV, TABLE_MD, RUNS_CSV)]
    write_csv(paths[0], [row.as_dict() for row in rows])
    with open(paths[1], "w") as handle:
        handle.write(markdown(study, rows, results))
    write_csv(paths[2], runs_table(results))
    return paths

