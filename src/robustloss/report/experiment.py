"""Build an experiment's report from the results store alone.

The store holds the experiment document (title, layout, the paper's numbers), the grid
cells, each run's training metrics, per-sample evaluation records and diagnostics. From
these: a table in the paper's layout (ours as mean ± std over seeds beside the published
value), plots (robust accuracy against eps with the worst case, clean against robust,
training curves), the gradient-masking diagnostics, and one self-contained HTML page.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from robustloss.errors import RobustlossError
from robustloss.evaluate.probes import PROBE_PREFIX  # probe attacks: not rows of a paper's table
from robustloss.evaluate.metrics import WORST_CASE, metric_value, same_param
from robustloss.evaluate.records import Evaluation
from robustloss.experiments.schema import seed_axes
from robustloss.experiments.store import ResultsStore
from robustloss.report.table import Cell, ReportTable, TableRow, TableSection

_log = logging.getLogger(__name__)

ACCURACY_NOTE = ("Accuracy (%) on the evaluated test samples; a clean-misclassified sample counts as a failure "
                 "under every attack (the papers' convention). Worst case: per sample, any attack of that norm "
                 "that found an adversarial example within the budget (diagnostic probes included).")


@dataclass
class RunView:
    """One stored run as the report sees it."""

    run_id: int
    labels: dict[str, str]
    status: str
    evaluation: Evaluation | None
    metrics: list[dict]
    diagnostics: list[dict]
    changes: list[str]


@dataclass
class ReportFiles:
    folder: Path
    markdown: Path
    csv: Path
    latex: Path
    html: Path
    plots: list[Path] = field(default_factory=list)
    table: ReportTable | None = None
    sweep_csv: Path | None = None  # when the experiment has a sweep: block
    transfer_csv: Path | None = None  # when transfer attacks crafted on the experiment's own models


def build_report(store: ResultsStore, experiment: str, out: str | Path, *, scale: str | None = None,
                 log: Callable[[str], None] = _log.info) -> ReportFiles:
    from robustloss.report.html import build_html
    from robustloss.report.render import diagnostics_markdown, to_csv, to_latex, to_markdown, write_text_atomic
    from robustloss.report.analyses import collect_analyses
    from robustloss.report.draws import draws_html_blocks, draws_markdown
    from robustloss.report.findings import compute_findings, findings_markdown
    from robustloss.report.sweep import write_sweep
    from robustloss.report.transfer_matrix import write_transfer_matrices

    scale, document = _document(store, experiment, scale)
    file = document["file"]
    columns_axis = file.get("report", {}).get("columns", "method")
    sections_axis = file.get("report", {}).get("sections")
    runs = _runs(store, experiment, scale)
    if not runs:
        raise RobustlossError(f"no runs of {experiment!r} at scale {scale!r} in {store.path}; "
                              f"run `robustloss run CONFIG --scale {scale}` first")
    axes = list(runs[0].labels)
    averaged = seed_axes(axes)
    table = make_table(runs, document, columns_axis, sections_axis, averaged)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{experiment}-{scale}"
    sweep = write_sweep(store, experiment, scale, out, stem) if file.get("sweep") else None
    analyses = collect_analyses(store, experiment, scale, {store.get_run(r.run_id).train_hash for r in runs})
    transfer = write_transfer_matrices(_matrix_runs(store, runs, sections_axis, averaged), out, stem)
    labelled = [(_run_label(r), r.evaluation) for r in runs]
    findings = findings_markdown(compute_findings(runs, document, columns_axis, sections_axis))
    markdown = (f"# {table.title}\n\n" + findings + ("\n## Results\n\n" if findings else "")
                + to_markdown(table, title=False) + draws_markdown(labelled) + (sweep.markdown() if sweep else "")
                + (transfer.markdown() if transfer else "") + analyses.markdown(out))
    diag_blocks = [(_run_label(r), r.diagnostics) for r in runs if r.diagnostics]
    if diag_blocks:
        markdown += "\n## Gradient-masking diagnostics\n"
        for label, rows in diag_blocks:
            markdown += f"\n### {label}\n\n{diagnostics_markdown(rows)}"
    md_path = out / f"{stem}.md"
    write_text_atomic(md_path, markdown)
    csv_path = to_csv(table, out / f"{stem}.csv")
    tex_path = out / f"{stem}.tex"
    write_text_atomic(tex_path, to_latex(table))
    plots = make_plots(table, runs, out, stem)

    blocks: list[tuple[str, object]] = [("paragraph", file.get("paper", ""))]
    if findings:
        blocks += [("markdown", findings), ("heading", "Results")]
    blocks.append(("table", table))
    for path, caption in plots:
        blocks.append(("image", (path, caption)))
    blocks += draws_html_blocks(labelled)
    blocks += sweep.html_blocks() if sweep else []
    blocks += transfer.html_blocks() if transfer else []
    blocks += analyses.html_blocks()
    if diag_blocks:
        blocks.append(("heading", "Gradient-masking diagnostics"))
        blocks += [("diagnostics", block) for block in diag_blocks]
    blocks.append(("pre", _provenance(store, runs, document)))
    html_path = build_html(table.title, blocks, out / f"{stem}.html")
    log(f"report: {html_path}")
    plots += (sweep.plots if sweep else []) + (transfer.plots if transfer else [])
    return ReportFiles(out, md_path, csv_path, tex_path, html_path, [p for p, _ in plots] + analyses.plots, table,
                       sweep.csv if sweep else None, transfer.csv if transfer else None)


# -- loading ----------------------------------------------------------------------------------
def _document(store: ResultsStore, experiment: str, scale: str | None) -> tuple[str, dict]:
    scales = store.experiment_scales(experiment)
    if not scales:
        known = ", ".join(store.experiments()) or "none yet"
        raise RobustlossError(f"the store {store.path} has no experiment {experiment!r} (experiments: {known})")
    if scale is None:
        scale = scales[-1]  # the most recently run scale
    elif scale not in scales:
        raise RobustlossError(f"{experiment!r} was not run at scale {scale!r}; it was run at: {', '.join(scales)}")
    return scale, store.experiment_document(experiment, scale)


def _runs(store: ResultsStore, experiment: str, scale: str) -> list[RunView]:
    views = []
    for cell in store.cells(experiment, scale):
        run = store.get_run(cell.run_id)
        views.append(RunView(cell.run_id, cell.cell, run.status, store.load_evaluation(cell.run_id),
                             store.metrics(cell.run_id), store.diagnostics(cell.run_id),
                             list(run.config.get("changes", []))))
    return views


# -- the table --------------------------------------------------------------------------------
def make_table(runs: list[RunView], document: dict, columns_axis: str, sections_axis: str | None,
               averaged: list[str]) -> ReportTable:
    file = document["file"]
    published = document.get("published", [])
    extra_axes = [a for a in runs[0].labels if a not in (columns_axis, sections_axis, *averaged)]

    def column_of(run: RunView) -> str:
        name = run.labels.get(columns_axis, "ours")
        extras = ", ".join(f"{a}={run.labels[a]}" for a in extra_axes)
        return f"{name} ({extras})" if extras else name

    columns = list(dict.fromkeys(column_of(r) for r in runs))
    method_of = {column_of(r): r.labels.get(columns_axis, "ours") for r in runs}  # column -> published method
    sections = list(dict.fromkeys(r.labels.get(sections_axis, "") if sections_axis else "" for r in runs))
    title = " — ".join(filter(None, [file.get("title") or file.get("name"), f"scale {document.get('scale')}"]))
    table = ReportTable(title=title, columns=columns, notes=[ACCURACY_NOTE, *file.get("notes", [])])
    for section in sections:
        members = [r for r in runs if (r.labels.get(sections_axis, "") if sections_axis else "") == section]
        paper = [p for p in published if p["section"] == section or (not sections_axis and not p["section"])]
        keys = _row_keys(members, paper)
        rows = []
        for row, param, metric in keys:
            cells = {}
            for column in columns:
                values = [v for r in members if column_of(r) == column
                          for v in [metric_value(r.evaluation, row, param, metric)] if v is not None]
                paper_value = next((p["value"] for p in paper if p["method"] == method_of[column]
                                    and p["row"] == row and same_param(p["param"], param)
                                    and p["metric"] == metric), None)
                cells[column] = _cell(values, paper_value)
            rows.append(TableRow(row, param, metric, cells))
        notes = sorted({c for r in members for c in r.changes}) + _subset_notes(members, column_of)
        unfinished = [f"{column_of(r)}: {r.status}" for r in members if r.evaluation is None]
        if unfinished:
            notes.append("not evaluated yet: " + "; ".join(unfinished))
        table.sections.append(TableSection(section, rows, notes))
    return table


def _subset_notes(members: list[RunView], column_of: Callable[[RunView], str]) -> list[str]:
    """For each row attacked on a random subset (``n_samples``): its size and each run's 95% interval."""
    notes: dict[tuple, list[str]] = {}
    for run in members:
        for record in (run.evaluation.records if run.evaluation is not None else []):
            sampled = record.sampled
            if sampled.all():
                continue
            n = int(sampled.sum())
            low, high = wilson_interval(int(run.evaluation.robust(record)[sampled].sum()), n)
            key = (record.name, record.eps, n, run.evaluation.n)
            notes.setdefault(key, []).append(f"{column_of(run)} [{100 * low:.1f}, {100 * high:.1f}]")
    return [f"{name}{'' if eps is None else f' eps {eps:g}'}: attacked on a fixed, seeded random subset of {n:,} of the "
            f"{total:,} test images; 95% Wilson interval: {'; '.join(parts)}" for (name, eps, n, total), parts in notes.items()]


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _row_keys(members: list[RunView], paper: list[dict]) -> list[tuple[str, float | None, str]]:
    """Rows in the paper's order, then rows only we ran, then the worst case per budget."""
    keys: list[tuple[str, float | None, str]] = [("clean", None, "accuracy")]
    for p in paper:
        key = (p["row"], p["param"], p["metric"])
        if not any(_same_key(key, k) for k in keys):
            keys.append(key)
    for run in members:
        if run.evaluation is None:
            continue
        for record in run.evaluation.records:
            if record.name.startswith(PROBE_PREFIX):
                continue
            key = (record.name, record.eps, "accuracy")
            if not any(k[0] == key[0] and same_param(k[1], key[1]) for k in keys):
                keys.append(key)
    for norm, budgets in _worst_case_budgets(members).items():
        label = WORST_CASE if norm == "linf" else f"{WORST_CASE} ({norm.upper()})"
        keys += [(label, eps, "accuracy") for eps in budgets]
    return keys


def _worst_case_budgets(members: list[RunView]) -> dict[str, list[float]]:
    budgets: dict[str, set[float]] = defaultdict(set)
    for run in members:
        if run.evaluation is None:
            continue
        for r in run.evaluation.records:
            if r.norm is not None and r.eps is not None and not r.name.startswith(PROBE_PREFIX):
                budgets[r.norm].add(round(float(r.eps), 6))
    return {norm: sorted(values) for norm, values in sorted(budgets.items())}


def _cell(values: list[float], paper: float | None) -> Cell:
    if not values:
        return Cell(paper=paper)
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return Cell(mean, std, len(values), paper)


def _same_key(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and same_param(a[1], b[1]) and a[2] == b[2]


def _matrix_runs(store: ResultsStore, runs: list[RunView], sections_axis: str | None, averaged: list[str]):
    """The runs as the transfer matrix names them: by their grid values less the section and the seeds."""
    from robustloss.report.transfer_matrix import MatrixRun

    hidden = {sections_axis, *averaged}
    return [MatrixRun(", ".join(v for a, v in r.labels.items() if a not in hidden) or "model",
                      r.labels.get(sections_axis, "") if sections_axis else "", store.get_run(r.run_id).train_hash,
                      r.evaluation) for r in runs]


def _run_label(run: RunView) -> str:
    return ", ".join(f"{k}={v}" for k, v in run.labels.items()) or "run"


# -- plots ------------------------------------------------------------------------------------
def make_plots(table: ReportTable, runs: list[RunView], out: Path, stem: str) -> list[tuple[Path, str]]:
    from robustloss.report.plots import plot_accuracy_vs_eps, plot_clean_vs_robust, plot_training_curves

    plots = []
    for section in table.sections:
        tag = f"-{_slug(section.name)}" if section.name else ""
        where = f" ({section.name})" if section.name else ""
        curves: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        points = []
        clean = next((r for r in section.rows if r.row == "clean"), None)
        for row in section.rows:
            if row.param is None or row.metric != "accuracy" or row.row == "clean":
                continue
            for column, cell in row.cells.items():
                if cell.mean is None:
                    continue
                curves[column][row.row].append((row.param, cell.mean, cell.std))
                if row.row.startswith(WORST_CASE) and clean is not None and clean.cells[column].mean is not None:
                    points.append({"method": column, "clean": clean.cells[column].mean, "robust": cell.mean,
                                   "label": f"{row.row} ε={row.param:g}"})
        if any(curves.values()):
            path = plot_accuracy_vs_eps(curves, out / f"{stem}{tag}-accuracy-vs-eps.png",
                                        title=f"Robust accuracy against ε{where}")
            plots.append((path, f"Robust accuracy against ε per attack, with the per-sample worst case{where}."))
        if points:
            path = plot_clean_vs_robust(points, out / f"{stem}{tag}-clean-vs-robust.png",
                                        title=f"Clean against worst-case robust accuracy{where}")
            plots.append((path, f"Clean accuracy against worst-case robust accuracy{where}."))
    histories = {}
    for run in runs:
        if run.metrics:
            histories[_run_label(run)] = run.metrics
    if histories:
        path = plot_training_curves(histories, out / f"{stem}-training.png", title="Training curves")
        plots.append((path, "Training loss and accuracy per epoch (phase changes marked)."))
    return plots


def _slug(text: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in text).strip("-")


def _provenance(store: ResultsStore, runs: list[RunView], document: dict) -> str:
    lines = [f"store: {store.path}", f"experiment file: {document.get('path')}", f"scale: {document.get('scale')}"]
    if document.get("overrides"):
        lines.append("overrides: " + " ".join(document["overrides"]))
    for view in runs:
        run = store.get_run(view.run_id)
        lines.append(f"run {run.hash} [{run.status}] {run.name} · code {run.code_revision}")
    return "\n".join(lines)
