"""The values of a sweep: a metric along one or two numeric grid axes, read from the results store alone.

``collect_sweep`` reads the experiment's ``sweep:`` block and its cells from the store and
returns one ``SweepPoint`` per series and grid point: the mean over the runs that differ only
in averaged axes (seed axes and ``sweep.average``), with their standard deviation. A series is
one attack row at one budget, or the clean accuracy, within one group: the values of any
remaining axis (e.g. ``dataset=MNIST``), which splits the series rather than being averaged.

The tables (``sweep_tables``) and the figures (``sweep_figures``) read only the ``Sweep`` built
here, never the store.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from robustloss.errors import RobustlossError
from robustloss.experiments.store import ResultsStore
from robustloss.evaluate.metrics import PERCENT_METRICS, metric_value
from robustloss.evaluate.probes import PROBE_PREFIX
from robustloss.experiments.schema import seed_axes

CLEAN = "clean"


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
