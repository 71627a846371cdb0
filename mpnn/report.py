"""Human-readable reports of metrics: the terminal summary of `mpnn-train` and
`mpnn-evaluate`, and the Markdown tables of ``mpnn-report --model RUN``.

Splits of a data set with a group (water: ``n_waters``) get a table per group: MAE,
within-group Spearman rank correlation, and MAE and bias (mean of prediction - truth) on the
lowest and highest 5% of the group by true energy, then the mean over the groups weighted
by their size and the worst group (see `mpnn.metrics.group_metrics`).
"""

from __future__ import annotations



# Columns of the group tables: (header, key in the flat row, format).
_GROUP_COLUMNS = (
    ("MAE", "mae", "{:.3f}"),
    ("Spearman", "spearman", "{:.3f}"),
    ("low MAE", "low_tail_mae", "{:.3f}"),
    ("low bias", "low_tail_bias", "{:+.3f}"),
    ("high MAE", "high_tail_mae", "{:.3f}"),
    ("high bias", "high_tail_bias", "{:+.3f}"),
)


# Water clusters: the energy error per water, after the MAE.
_PER_WATER_COLUMN = ("MAE/water", "mae_per_water", "{:.4f}")


def _columns(split_metrics: dict) -> tuple[tuple[str, str, str], ...]:
    """The group table's columns of a split: `_GROUP_COLUMNS`, and for water clusters the
    MAE per water."""
    if "mae_per_water" not in split_metrics:
        return _GROUP_COLUMNS
    return (_GROUP_COLUMNS[0], _PER_WATER_COLUMN, *_GROUP_COLUMNS[1:])


def _flat_row(row: dict) -> dict:
    return {
        "count": row["count"],
        "mae": row["mae"],
        "mae_per_water": row.get("mae_per_water"),
        "spearman": row.get("spearman"),
        "low_tail_mae": row["low_tail"]["mae"],
        "low_tail_bias": row["low_tail"]["bias"],
        "high_tail_mae": row["high_tail"]["mae"],
        "high_tail_bias": row["high_tail"]["bias"],
    }


def _cell(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def _group_rows(split_metrics: dict) -> list[tuple[str, str, list[str]]]:
    """(label, count, cells) per group, then the weighted mean and the worst group."""
    summary = split_metrics["group_summary"]
    columns = _columns(split_metrics)
    weighted = {**summary["weighted"], "mae_per_water": split_metrics.get("mae_per_water")}
    rows = []
    for group, row in sorted(split_metrics["by_group"].items(), key=lambda item: int(item[0])):
        flat = _flat_row(row)
        rows.append((group, str(flat["count"]), [_cell(flat[key], form) for _, key, form in columns]))
    rows.append(("weighted", str(split_metrics["count"]), [_cell(weighted[key], form) for _, key, form in columns]))
    worst = [summary["worst"].get(key) for _, key, _ in columns]
    rows.append(("worst", "", [
        "-" if w is None else f"{_cell(w['value'], form)} ({w['group']})"
        for w, (_, _, form) in zip(worst, columns)
    ]))
    return rows


def _tail_note(split_metrics: dict) -> str:
    summary = split_metrics["group_summary"]
    return (
        f"low/high: the lowest/highest {summary['tail_fraction']:.0%} of each {summary['name']} by true value; "
        f"bias = mean(predicted - true); Spearman within each {summary['name']} (groups of at least "
        f"{summary['min_records']}); worst over such groups (group in brackets)"
    )


def group_table(split_metrics: dict) -> str:
    """Terminal table of a split's per-group metrics (``by_group``, ``group_summary``)."""
    name = split_metrics["group_summary"]["name"]
    columns = _columns(split_metrics)
    widths = [max(9, len(header) + 1) for header, _, _ in columns]
    rows = _group_rows(split_metrics)
    widths = [max(w, *(len(cells[i]) for _, _, cells in rows)) for i, w in enumerate(widths)]
    label_width = max(len(name), 8)
    lines = [f"{name:>{label_width}} {'n':>6} " + " ".join(f"{h:>{w}}" for (h, _, _), w in zip(columns, widths))]
    for label, count, cells in rows:
        lines.append(f"{label:>{label_width}} {count:>6} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    lines.append(_tail_note(split_metrics))
    return "\n".join(lines)


def format_split(split: str, split_metrics: dict, units: str) -> str:
    """One split's headline metrics, then its group table (if it has groups)."""
    m = split_metrics
    lines = [
        f"{split}: n {m['count']}  MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  "
        f"R^2 {m['r2']:.4f}  Pearson {m['pearson_r']:.4f}  ({units})"
    ]
    if "mae_per_water" in m:
        lines.append(f"energy MAE per water {m['mae_per_water']:.4f} {units}")
    if "group_summary" in m:
        lines.append(group_table(m))
    if "forces" in m:
        lines.append(force_table(m["forces"], units))
    return "\n".join(lines)


def force_table(forces: dict, units: str) -> str:
    """Terminal lines of a split's force errors (`mpnn.metrics.force_metrics`)."""
    parts = "  ".join(
        f"{axis} {row['mae']:.4f}/{row['rmse']:.4f}" for axis, row in forces["by_component"].items()
    )
    return (
        f"forces ({units}/Angstrom, {forces['count']} atoms): MAE {forces['mae']:.4f}  RMSE {forces['rmse']:.4f}  "
        f"MAE/RMSE per component: {parts}"
    )


def format_summary(metrics: dict, run_dir: str) -> str:
    """A short table of the validation and test metrics for the terminal, then the test
    split's metrics per group."""
    units = metrics["target"]["units"]
    lines = [f"{'split':<6} {'n':>6} {'MAE':>9} {'RMSE':>9} {'R^2':>7} {'Pearson':>8}   ({units})"]
    for split in ("valid", "test"):
        if split in metrics:
            m = metrics[split]
            lines.append(
                f"{split:<6} {m['count']:>6} {m['mae']:>9.4f} {m['rmse']:>9.4f} {m['r2']:>7.4f} {m['pearson_r']:>8.4f}"
            )
    if "baselines" in metrics:
        baseline = metrics["baselines"]["test_mae_of_group_mean"]
        lines.append(f"baseline (mean of the group in training): test MAE {baseline:.4f}")
    test = metrics.get("test", {})
    if "mae_per_water" in test:
        lines.append(f"test energy MAE per water {test['mae_per_water']:.4f} {units}")
    if "forces" in test:
        lines.append("test " + force_table(test["forces"], units))
    if "group_summary" in test:
        lines += [f"test split per group ({units}):", group_table(test)]
    lines.append(
        f"{metrics['epochs_run']} epochs in {metrics['train_seconds']:.0f} s on {metrics['ranks']} rank(s) "
        f"({metrics['model']}, {metrics['parameters']} parameters); run directory: {run_dir}"
    )
    if "engine" in metrics:
        engine = metrics["engine"]
        lines.append(f"engine {engine['name']} (TensorFlow {engine['tensorflow']}, {engine['keras']})")
    return "\n".join(lines)


def markdown(metrics: dict) -> str:
    """Markdown tables: metrics per split, then the test metrics per group (cluster size)."""
    units = metrics["target"]["units"]
    lines = [
        f"| split | n | MAE ({units}) | RMSE ({units}) | R^2 | Pearson r |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split in (s for s in ("valid", "test") if s in metrics):
        m = metrics[split]
        lines.append(
            f"| {split} | {m['count']} | {m['mae']:.3f} | {m['rmse']:.3f} | {m['r2']:.4f} | {m['pearson_r']:.4f} |"
        )
    test = metrics.get("test", {})
    if "group_summary" not in test:
        return "\n".join(lines)
    columns = _columns(test)
    headers = " | ".join(header for header, _, _ in columns)
    lines += [
        "",
        f"| {test['group_summary']['name']} | n | {headers} |",
        "| ---: | ---: | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for label, count, cells in _group_rows(test):
        lines.append(f"| {label} | {count} | " + " | ".join(cells) + " |")
    lines += ["", f"Test split, {units}. {_tail_note(test).capitalize()}."]
    if "forces" in test:
        forces = test["forces"]
        lines += [
            "",
            f"| forces ({units}/Angstrom) | atoms | MAE | RMSE |",
            "| --- | ---: | ---: | ---: |",
            f"| all components | {forces['count']} | {forces['mae']:.4f} | {forces['rmse']:.4f} |",
            *(f"| {axis} | {forces['count']} | {row['mae']:.4f} | {row['rmse']:.4f} |"
              for axis, row in forces["by_component"].items()),
            *(f"| {test['group_summary']['name']} = {group} | {row['count']} | {row['mae']:.4f} | {row['rmse']:.4f} |"
              for group, row in sorted(forces["by_group"].items(), key=lambda item: int(item[0]))),
        ]
    return "\n".join(lines)


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m mpnn.report: the command is mpnn-report (or python -m mpnn.cli.report)")
