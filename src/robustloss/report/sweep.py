"""Sweeps: a metric along one or two numeric grid axes, read from the results store alone.

``collect_sweep`` reads the experiment's ``sweep:`` block and its cells from the store and
returns one ``SweepPoint`` per series and grid point: the mean over the runs that differ only
in averaged axes (seed axes and ``sweep.average``), with their standard deviation. A series is
one attack row at one budget, or the clean accuracy, within one group: the values of any
remaining axis (e.g. ``dataset=MNIST``), which splits the series rather than being averaged.

``write_sweep`` writes the values as CSV, the plots (one axis: a line plot; two axes: annotated
heatmaps and 3-D surfaces, one panel per series) and the Markdown/HTML pieces that
``build_report`` adds to the experiment's report.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from robustloss.errors import RobustlossError
from robustloss.experiments.store import ResultsStore
from robustloss.evaluate.metrics import PERCENT_METRICS, metric_value
from robustloss.evaluate.diagnostics import PROBE_PREFIX
from robustloss.experiments.schema import seed_axes
from robustloss.figures import pyplot, save_figure
from robustloss.report.render import write_text_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CLEAN = "clean"
MAX_PANELS_PER_ROW = 3
MAX_LABELLED_TICKS = 12  # beyond this many measured values, matplotlib's own ticks read better


@dataclass(frozen=True)
class SeriesKey:
    group: str  # values of the axes that split series ("dataset=MNIST"); "" when there are none
    row: str  # an attack label, or "clean"
    eps: float | None

    @property
    def title(self) -> str:
        name = self.row if self.eps is None else f"{self.row} ε={self.eps:g}"
        return f"{self.group} · {name}" if self.group else name


@dataclass
class SweepPoint:
    series: SeriesKey
    x: float
    y: float | None
    mean: float
    std: float | None  # over the averaged runs; None with a single run
    n: int  # how many runs were averaged


@dataclass
class Sweep:
    experiment: str
    scale: str
    x_axis: str
    y_axis: str | None
    metric: str
    x_label: str
    y_label: str
    log_x: bool = False
    log_y: bool = False
    points: list[SweepPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # cells left out, and why

    @property
    def axes(self) -> list[str]:
        return [self.x_axis] if self.y_axis is None else [self.x_axis, self.y_axis]

    @property
    def metric_title(self) -> str:
        return f"{self.metric.replace('_', ' ')}{' (%)' if self.metric in PERCENT_METRICS else ''}"

    @property
    def title(self) -> str:
        against = self.x_label if self.y_axis is None else f"{self.x_label} and {self.y_label}"
        return f"{self.metric.replace('_', ' ')} against {against}"

    def series(self) -> dict[SeriesKey, list[SweepPoint]]:
        grouped: dict[SeriesKey, list[SweepPoint]] = {}
        for point in self.points:
            grouped.setdefault(point.series, []).append(point)
        return grouped

    def xs(self) -> list[float]:
        return sorted({p.x for p in self.points})

    def ys(self) -> list[float]:
        return sorted({p.y for p in self.points if p.y is not None})


# ---------------------------------------------------------------------------------------------
# Collecting the values
# ---------------------------------------------------------------------------------------------


def collect_sweep(store: ResultsStore, experiment: str, scale: str) -> Sweep:
    """The sweep of ``experiment`` at ``scale``: the metric per series and grid point."""
    document = store.experiment_document(experiment, scale)
    config = document["file"].get("sweep")
    if not config:
        raise RobustlossError(f"experiment {experiment!r} has no sweep: block; add one to its file or run "
                              f"`robustloss sweep CONFIG --over KEY=V1,V2,...`")
    x_axis, y_axis, metric = config["x"], config.get("y"), config.get("metric", "accuracy")
    sweep = Sweep(experiment, scale, x_axis, y_axis, metric,
                  config.get("x_label") or _short(x_axis), config.get("y_label") or _short(y_axis or ""),
                  bool(config.get("log_x")), bool(config.get("log_y")))
    wanted_rows, wanted_eps = list(config.get("rows") or []), list(config.get("eps") or [])
    values: dict[tuple[SeriesKey, float, float | None], list[float]] = defaultdict(list)
    cells = store.cells(experiment, scale)
    # Cells linked by an earlier run of the experiment with another grid lack the sweep's axes.
    plotted = [c for c in cells if all(axis in c.cell for axis in sweep.axes)]
    missing_axis, unfinished = len(cells) - len(plotted), 0
    splitting = _splitting_axes(plotted, sweep.axes, list(config.get("average") or []))
    for cell in plotted:
        labels = cell.cell
        evaluation = store.load_evaluation(cell.run_id)
        if evaluation is None:
            unfinished += 1
            continue
        group = ", ".join(f"{a}={labels[a]}" for a in splitting)
        x = float(labels[x_axis])
        y = float(labels[y_axis]) if y_axis else None
        for row, eps in _rows(evaluation, metric, wanted_rows, wanted_eps):
            value = metric_value(evaluation, row, eps, metric)
            if value is not None:
                values[(SeriesKey(group, row, eps), x, y)].append(value)
    for (series, x, y), runs in values.items():
        std = float(np.std(runs, ddof=1)) if len(runs) > 1 else None
        sweep.points.append(SweepPoint(series, x, y, float(np.mean(runs)), std, len(runs)))
    if missing_axis:
        sweep.notes.append(f"{missing_axis} cell(s) left out: they come from an earlier grid without "
                           f"{' / '.join(sweep.axes)}")
    if unfinished:
        sweep.notes.append(f"{unfinished} cell(s) not evaluated yet")
    return sweep


def _splitting_axes(cells, plotted: list[str], average: list[str]) -> list[str]:
    """Axes that split the points into series: not plotted, not averaged (seed axes and
    ``sweep.average``), and with more than one value (a lone dataset=MNIST says nothing)."""
    axes = list(dict.fromkeys(a for c in cells for a in c.cell))
    averaged = set(seed_axes(axes)) | set(average)
    return [a for a in axes if a not in plotted and a not in averaged
            and len({c.cell.get(a) for c in cells}) > 1]


def _rows(evaluation, metric: str, wanted_rows: list[str], wanted_eps: list[float]) -> list[tuple[str, float | None]]:
    """(row, eps) pairs to plot from one evaluation: clean first (for accuracy-like metrics), then
    each attack record in the order it ran, filtered by the sweep's rows and budgets."""
    pairs: list[tuple[str, float | None]] = [(CLEAN, None)] if metric in PERCENT_METRICS else []
    for record in evaluation.records:
        if record.name.startswith(PROBE_PREFIX) or (wanted_rows and record.name not in wanted_rows):
            continue
        if wanted_eps and not any(_close(record.eps, e) for e in wanted_eps):
            continue
        if not any(name == record.name and _close(eps, record.eps) for name, eps in pairs):
            pairs.append((record.name, record.eps))
    return pairs


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)


def _short(axis: str) -> str:
    """The last part of a dotted axis: what a reader calls it (vars.s -> s, ...samples -> samples)."""
    return axis.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------------
# CSV and Markdown
# ---------------------------------------------------------------------------------------------


def sweep_csv(sweep: Sweep) -> str:
    """One line per point; the axis columns are named after the grid axes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "row", "eps", sweep.x_axis, *([sweep.y_axis] if sweep.y_axis else []), "metric",
                     "mean", "std", "n_runs"])
    for p in sweep.points:
        writer.writerow([p.series.group, p.series.row, "" if p.series.eps is None else f"{p.series.eps:.10g}",
                         f"{p.x:.10g}", *([f"{p.y:.10g}"] if sweep.y_axis else []), sweep.metric,
                         f"{p.mean:.6g}", "" if p.std is None else f"{p.std:.6g}", p.n])
    return buffer.getvalue()


def _shown(point: SweepPoint | None, metric: str) -> str:
    if point is None:
        return "—"
    digits = 1 if metric in PERCENT_METRICS else 3
    text = f"{point.mean:.{digits}f}"
    return text + (f" ± {point.std:.{digits}f}" if point.std is not None else "")


def sweep_markdown_tables(sweep: Sweep) -> str:
    """The values as Markdown: one table (x down, a column per series) for a line sweep, one
    table per series (y down, x across, as the heatmap) for a surface."""
    if not sweep.points:
        return "No finished runs to plot yet.\n"
    series = sweep.series()
    if sweep.y_axis is None:
        at = {(p.series, p.x): p for p in sweep.points}
        lines = [f"| {sweep.x_label} | " + " | ".join(_cell_text(k.title) for k in series) + " |",
                 "|---:|" + "---:|" * len(series)]
        for x in sweep.xs():
            lines.append(f"| {x:g} | " + " | ".join(_shown(at.get((k, x)), sweep.metric) for k in series) + " |")
        return "\n".join(lines) + "\n"
    parts = []
    for key, points in series.items():
        at = {(p.x, p.y): p for p in points}
        lines = [f"**{_cell_text(key.title)}** ({sweep.metric_title})", "",
                 f"| {sweep.y_label} ↓ {sweep.x_label} → | " + " | ".join(f"{x:g}" for x in sweep.xs()) + " |",
                 "|---:|" + "---:|" * len(sweep.xs())]
        for y in sweep.ys():
            lines.append(f"| {y:g} | " + " | ".join(_shown(at.get((x, y)), sweep.metric) for x in sweep.xs()) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|")


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def _colour_cycle() -> list:
    return list(pyplot().get_cmap("tab10").colors)


def _measured_ticks(ax: Axes, axis: str, values: list[float]) -> None:
    """Ticks at the measured values: a sweep's grid is what the reader wants to read off."""
    if 0 < len(values) <= MAX_LABELLED_TICKS:
        setter = ax.set_xticks if axis == "x" else ax.set_yticks
        setter(values, [f"{v:g}" for v in values])
        from matplotlib.ticker import NullLocator

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


# ---------------------------------------------------------------------------------------------
# Into the report
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepFiles:
    sweep: Sweep
    csv: Path
    plots: list[tuple[Path, str]]  # (PNG, caption)

    def markdown(self) -> str:
        """The sweep's section of the Markdown report (plots as links beside the .md file)."""
        lines = [f"\n## Sweep: {self.sweep.title}\n", sweep_markdown_tables(self.sweep)]
        lines += [f"![{caption}]({path.name})\n" for path, caption in self.plots]
        lines += [f"- {note}" for note in self.sweep.notes]
        lines.append(f"\nValues: [{self.csv.name}]({self.csv.name})\n")
        return "\n".join(lines)

    def html_blocks(self) -> list[tuple[str, object]]:
        blocks: list[tuple[str, object]] = [("heading", f"Sweep: {self.sweep.title}")]
        blocks += [("image", plot) for plot in self.plots]
        blocks.append(("markdown", sweep_markdown_tables(self.sweep)))
        blocks += [("paragraph", note) for note in self.sweep.notes]
        blocks.append(("paragraph", f"Values: {self.csv.name} (beside this page)."))
        return blocks


def write_sweep(store: ResultsStore, experiment: str, scale: str, out: str | Path, stem: str) -> SweepFiles:
    """Collect the sweep and write OUT/STEM-sweep.csv and its plots."""
    sweep = collect_sweep(store, experiment, scale)
    out = Path(out)
    csv_path = write_text_atomic(out / f"{stem}-sweep.csv", sweep_csv(sweep))
    plots: list[tuple[Path, str]] = []
    if not sweep.points:
        return SweepFiles(sweep, csv_path, plots)
    if sweep.y_axis is None:
        spread = "; error bars: std over the averaged runs" if any(p.std is not None for p in sweep.points) else ""
        caption = (f"{sweep.metric_title} against {sweep.x_label}, one line per attack and budget "
                   f"(clean dashed){spread}.")
        plots.append((plot_sweep_lines(sweep, out / f"{stem}-sweep.png"), caption))
    else:
        caption = (f"{sweep.metric_title} over {sweep.x_label} (x) and {sweep.y_label} (y), one panel per attack "
                   "and budget, each with its own colour range.")
        plots.append((plot_sweep_heatmaps(sweep, out / f"{stem}-sweep-heatmap.png"), caption))
        caption = f"The same values as surfaces: x {sweep.x_label}, y {sweep.y_label}, z {sweep.metric_title}."
        plots.append((plot_sweep_surfaces(sweep, out / f"{stem}-sweep-surface.png"), caption))
    return SweepFiles(sweep, csv_path, plots)
