"""Sweeps into the report: ``write_sweep`` collects an experiment's sweep and writes its values as
CSV and its plots (one axis: a line plot; two axes: annotated heatmaps and 3-D surfaces, one panel
per series); the ``SweepFiles`` it returns give the Markdown/HTML pieces that ``build_report`` adds
to the experiment's report.

The work is split by what it produces: the values (``sweep_data``: ``collect_sweep`` and the
``Sweep`` it returns), the text (``sweep_tables``) and the figures (``sweep_figures``). This module
joins them into files, and re-exports their public names so that callers import everything about
sweeps from ``robustloss.report.sweep`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robustloss.experiments.store import ResultsStore
from robustloss.report.render import write_text_atomic
from robustloss.report.sweep_data import CLEAN, SeriesKey, Sweep, SweepPoint, collect_sweep
from robustloss.report.sweep_figures import plot_sweep_heatmaps, plot_sweep_lines, plot_sweep_surfaces
from robustloss.report.sweep_tables import sweep_csv, sweep_markdown_tables

__all__ = ["CLEAN", "SeriesKey", "Sweep", "SweepFiles", "SweepPoint", "collect_sweep", "plot_sweep_heatmaps",
           "plot_sweep_lines", "plot_sweep_surfaces", "sweep_csv", "sweep_markdown_tables", "write_sweep"]


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
