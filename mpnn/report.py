"""Human-readable reports of a run's ``metrics.json``: the terminal summary of
`mpnn-train` and the Markdown tables of ``python -m mpnn.report RUN_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence


def format_summary(metrics: dict, run_dir: str) -> str:
    """A short table of the validation and test metrics for the terminal."""
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
    lines.append(
        f"{metrics['epochs_run']} epochs in {metrics['train_seconds']:.0f} s on {metrics['ranks']} rank(s) "
        f"({metrics['model']}, {metrics['parameters']} parameters); run directory: {run_dir}"
    )
    return "\n".join(lines)


def markdown(metrics: dict, group_name: str = "group") -> str:
    """Markdown tables: metrics per split, then test MAE per group (cluster size)."""
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
    if "test" not in metrics:
        return "\n".join(lines)
    lines += ["", f"| {group_name} | n | test MAE ({units}) |", "| ---: | ---: | ---: |"]
    for group, row in sorted(metrics["test"]["by_group"].items(), key=lambda item: int(item[0])):
        lines.append(f"| {group} | {row['count']} | {row['mae']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpnn.report", description="Tables of a run's metrics.json.")
    parser.add_argument("run_dir", help="run directory written by mpnn-train")
    parser.add_argument("--group-name", default="n_waters", help="column name of the groups (default n_waters)")
    args = parser.parse_args(argv)
    with open(os.path.join(args.run_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    print(format_summary(metrics, args.run_dir))
    print()
    print(markdown(metrics, args.group_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
