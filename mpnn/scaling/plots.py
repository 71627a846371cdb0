"""Figures of a scaling study, in the style of the PDBbind study's Figures 2 and 3: time
gain (%) against the rank count, and the loss (%) of test R^2 and Pearson r against it,
one line per strategy and batch size (colour: batch size; solid: dbs, dashed: gbs),
error bars one sample standard deviation over the repeats.

The ``draw_*`` functions draw on axes the caller owns (a notebook's ``plt.subplots``);
`save_figures` builds `matplotlib.figure.Figure` objects with the Agg canvas directly, so
``mpnn-scaling collect`` needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

import math
import os

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mpnn.scaling.collect import ScalingRow

LINESTYLES = {"dbs": "-", "gbs": "--"}
FIGURE_FILES = {"time_gain": "time-gain.png", "metric_loss": "metric-loss.png"}


def _lines(rows: list[ScalingRow]) -> dict[tuple[str, int], list[ScalingRow]]:
    """Rows grouped by (strategy, batch size), each sorted by rank count."""
    lines: dict[tuple[str, int], list[ScalingRow]] = {}
    for row in sorted(rows, key=lambda r: (r.strategy, r.batch_size, r.ranks)):
        lines.setdefault((row.strategy, row.batch_size), []).append(row)
    return lines


def _draw(ax: Axes, rows: list[ScalingRow], quantity: str) -> None:
    batches = sorted({r.batch_size for r in rows})
    colours = {b: f"C{i}" for i, b in enumerate(batches)}
    for (strategy, batch), line in _lines(rows).items():
        means = [r.stats[quantity].mean for r in line]
        stds = [r.stats[quantity].std for r in line]
        ax.errorbar([r.ranks for r in line], means, yerr=None if all(map(math.isnan, stds)) else stds,
                    color=colours[batch], linestyle=LINESTYLES.get(strategy, ":"), marker="o", capsize=3,
                    label=f"{strategy.upper()} {batch}")
    ranks = sorted({r.ranks for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(k) for k in ranks])
    ax.minorticks_off()
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.set_xlabel("ranks (GPUs or CPU processes)")
    ax.grid(alpha=0.3)


def draw_time_gain(ax: Axes, rows: list[ScalingRow]) -> None:
    """Time gain (%) against ranks, with the ideal ``100 (1 - 1/K)`` (time T1 / K) dotted."""
    _draw(ax, rows, "time_gain_pct")
    ranks = sorted({r.ranks for r in rows})
    ax.plot(ranks, [100 * (1 - 1 / k) for k in ranks], color="0.4", linestyle=":", label="ideal (T1 / ranks)")
    ax.set_ylabel("time gain vs 1 rank (%)")
    ax.set_title("Training time gain")
    ax.legend(title="strategy, batch")


def draw_metric_loss(axes: tuple[Axes, Axes], rows: list[ScalingRow]) -> None:
    """Loss (%) of test R^2 (first axes) and Pearson r (second) against ranks."""
    for ax, quantity, name in zip(axes, ("r2_loss_pct", "pearson_loss_pct"), ("$R^2$", "Pearson $r$")):
        _draw(ax, rows, quantity)
        ax.set_ylabel(f"test {name} loss vs 1 rank (%)")
        ax.set_title(f"Loss in {name}")
    axes[0].legend(title="strategy, batch")


def save_figures(rows: list[ScalingRow], out_dir: str, title: str = "") -> list[str]:
    """Write ``time-gain.png`` and ``metric-loss.png`` into `out_dir`; returns the paths."""
    gain = Figure(figsize=(6, 4.5), layout="constrained")
    draw_time_gain(gain.add_subplot(), rows)
    loss = Figure(figsize=(11, 4.5), layout="constrained")
    draw_metric_loss(tuple(loss.subplots(1, 2)), rows)
    paths = []
    for name, figure in (("time_gain", gain), ("metric_loss", loss)):
        if title:
            figure.suptitle(title)
        FigureCanvasAgg(figure)
        path = os.path.join(out_dir, FIGURE_FILES[name])
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths
