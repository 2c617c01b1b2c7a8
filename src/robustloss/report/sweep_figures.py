"""A sweep's figures: a line plot for one axis; annotated heatmaps and 3-D surfaces for two, one panel
per series. They read only the ``Sweep`` (``sweep_data``).

Matplotlib is loaded by ``robustloss.figures.pyplot`` when a figure is first drawn (it picks the
headless backend before pyplot is imported), so importing this module does not load it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from robustloss.evaluate.metrics import PERCENT_METRICS
from robustloss.figures import pyplot, save_figure
from robustloss.report.sweep_data import CLEAN, Sweep, SweepPoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_PANELS_PER_ROW = 3
MAX_LABELLED_TICKS = 12  # beyond this many measured values, matplotlib's own ticks read better


def _colour_cycle() -> list:
    return list(pyplot().get_cmap("tab10").colors)


def _measured_ticks(ax: Axes, axis: str, values: list[float]) -> None:
    """Ticks at the measured values: a sweep's grid is what the reader wants to read off."""
    if 0 < len(values) <= MAX_LABELLED_TICKS:
        setter = ax.set_xticks if axis == "x" else ax.set_yticks
        setter(values, [f"{v:g}" for v in values])
        from matplotlib.ticker import NullLocator  # only once pyplot() has loaded matplotlib: see the docstring

        (ax.xaxis if axis == "x" else ax.yaxis).set_minor_locator(NullLocator())


def _panels(n: int, projection: str | None = None) -> tuple[Figure, list[Axes]]:
    ncols = min(n, MAX_PANELS_PER_ROW)
    nrows = math.ceil(n / ncols)
    plt = pyplot()
    fig = plt.figure(figsize=(4.6 * ncols, 4.0 * nrows + 0.6), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1, projection=projection) for i in range(n)]
    return fig, axes


def _line_figure(sweep: Sweep) -> Figure:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    colours = _colour_cycle()
    for i, (key, points) in enumerate(sweep.series().items()):
        points = sorted(points, key=lambda p: p.x)
        xs, ys = [p.x for p in points], [p.mean for p in points]
        colour = colours[i % len(colours)]
        # Clean accuracy is the reference the attacked rows fall from: dashed, so it reads as such.
        style = "--" if key.row == CLEAN else "-"
        ax.plot(xs, ys, linestyle=style, marker="o", markersize=4, color=colour, label=key.title)
        with_std = [(p.x, p.mean, p.std) for p in points if p.std is not None]
        if with_std:
            sx, sy, ss = zip(*with_std)
            ax.errorbar(sx, sy, yerr=ss, fmt="none", ecolor=colour, elinewidth=1, capsize=3)
    if sweep.log_x:
        ax.set_xscale("log")
    _measured_ticks(ax, "x", sweep.xs())
    if sweep.metric in PERCENT_METRICS:
        ax.set_ylim(0, 100)
    ax.set(xlabel=sweep.x_label, ylabel=sweep.metric_title, title=sweep.title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def _matrix(sweep: Sweep, points: list[SweepPoint]) -> np.ndarray:
    """values[y index, x index]; NaN where a grid point has no finished run."""
    xs, ys = sweep.xs(), sweep.ys()
    values = np.full((len(ys), len(xs)), np.nan)
    for p in points:
        values[ys.index(p.y), xs.index(p.x)] = p.mean
    return values


def _heatmap_figure(sweep: Sweep) -> Figure:
    series = sweep.series()
    fig, axes = _panels(len(series))
    xs, ys = sweep.xs(), sweep.ys()
    digits = 1 if sweep.metric in PERCENT_METRICS else 3
    for ax, (key, points) in zip(axes, series.items()):
        values = _matrix(sweep, points)
        # Each panel has its own colour range: the interesting part is how the metric varies within one.
        image = ax.imshow(np.ma.masked_invalid(values), origin="lower", aspect="auto", cmap="viridis")
        middle = np.nanmean([np.nanmin(values), np.nanmax(values)])
        for (j, i), value in np.ndenumerate(values):
            text = "—" if np.isnan(value) else f"{value:.{digits}f}"
            ax.text(i, j, text, ha="center", va="center", fontsize=8,
                    color="black" if np.isnan(value) or value > middle else "white")
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        ax.set(xlabel=sweep.x_label, ylabel=sweep.y_label, title=key.title)
        fig.colorbar(image, ax=ax, shrink=0.85, label=sweep.metric_title)
    fig.suptitle(sweep.title)
    return fig


def _surface_figure(sweep: Sweep) -> Figure:
    series = sweep.series()
    fig, axes = _panels(len(series), projection="3d")
    xs, ys = sweep.xs(), sweep.ys()
    # A log axis is drawn as log10 of the values with the values as tick labels (3-D axes have no log scale).
    px = np.log10(xs) if sweep.log_x else np.asarray(xs)
    py = np.log10(ys) if sweep.log_y else np.asarray(ys)
    grid_x, grid_y = np.meshgrid(px, py)
    for ax, (key, points) in zip(axes, series.items()):
        values = _matrix(sweep, points)
        if len(xs) > 1 and len(ys) > 1:
            ax.plot_surface(grid_x, grid_y, np.ma.masked_invalid(values), cmap="viridis", edgecolor="grey",
                            linewidth=0.3, alpha=0.9)
        ax.scatter(grid_x.ravel(), grid_y.ravel(), values.ravel(), color="black", s=8, depthshade=False)
        if len(xs) <= MAX_LABELLED_TICKS:
            ax.set_xticks(px, [f"{x:g}" for x in xs], fontsize=7)
        if len(ys) <= MAX_LABELLED_TICKS:
            ax.set_yticks(py, [f"{y:g}" for y in ys], fontsize=7)
        ax.set(xlabel=sweep.x_label, ylabel=sweep.y_label, title=key.title)
        ax.set_zlabel(sweep.metric_title, labelpad=8)
        ax.view_init(elev=28, azim=-130)  # the (min x, min y) corner in front, as in I-SCE's Fig. 3
        ax.set_box_aspect(None, zoom=0.85)  # room for the z label inside the panel
    fig.suptitle(sweep.title)
    return fig


def plot_sweep_lines(sweep: Sweep, path: str | Path) -> Path:
    """The metric against the one sweep axis: a line per series, clean dashed."""
    return save_figure(_line_figure(sweep), path)


def plot_sweep_heatmaps(sweep: Sweep, path: str | Path) -> Path:
    """One annotated heatmap per series over the two sweep axes."""
    return save_figure(_heatmap_figure(sweep), path)


def plot_sweep_surfaces(sweep: Sweep, path: str | Path) -> Path:
    """One 3-D surface per series over the two sweep axes."""
    return save_figure(_surface_figure(sweep), path)
