"""A sweep's values as text: the CSV written beside the report and the Markdown tables inside it.

Both read only the ``Sweep`` (``sweep_data``); the HTML report shows the same Markdown tables.
"""

from __future__ import annotations

import csv
import io

from robustloss.evaluate.metrics import PERCENT_METRICS
from robustloss.report.sweep_data import Sweep, SweepPoint


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
