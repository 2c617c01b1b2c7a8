"""Write the comparison table (Markdown + CSV) for one or more evaluated models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustloss.evaluate.records import Evaluation
from robustloss.evaluate.worst_case import worst_case_robust
from robustloss.reference.published import PAPER_DATASET, PublishedTable, load_published
from robustloss.report.comparison import ComparisonRow, compare_with_paper, to_csv, to_markdown
from robustloss.report.render import write_text_atomic

ACCURACY_CONVENTION = (
    "Accuracy (%) on the test samples; a clean-misclassified sample counts as a failure under every "
    "attack (the papers' convention)."
)


def describe_attacks(evaluation: Evaluation) -> list[str]:
    """One line per attack with its hyper-parameters, plus a warning where a budget is unreachable."""
    lines, seen = [], set()
    for record in evaluation.records:
        params = {k: v for k, v in record.params.items() if k != "eps"}
        key = (record.name, tuple(sorted(map(str, params.items()))))
        if key not in seen:
            seen.add(key)
            eps = [r.eps for r in evaluation.records if r.name == record.name]
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            budgets = ", ".join("unbounded" if e is None else f"{e:g}" for e in eps)
            lines.append(f"{record.name.upper()}: eps in {{{budgets}}}, {shown}.")
        steps, step = record.params.get("steps"), record.params.get("step_size")
        if steps and step and record.eps is not None and steps * step < record.eps - 1e-12:
            lines.append(
                f"Warning: {record.name.upper()} at eps={record.eps:g} can move at most {steps}x{step:g}="
                f"{steps * step:g} per pixel, so it cannot use its whole budget; its row under-reports that eps."
            )
    return lines


def write_comparison(
    evaluations: dict[str, Evaluation],
    labels: dict[str, str],
    dataset: str,
    out_dir: str | Path,
    *,
    title: str,
    notes: list[str] = (),
    published: str | None = None,
) -> str:
    """Write ``results.md`` and ``results.csv`` into ``out_dir``; return the Markdown. ``published``
    names a paper's table (``pc-table1``) to print beside ours; without it the table is ours alone."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = load_published(published) if published else PublishedTable(name="", cells={})
    rows, missing = compare_with_paper(evaluations, table, PAPER_DATASET.get(dataset, dataset))
    if not published:
        missing = []
    rows += worst_case_rows(evaluations)
    first = next(iter(evaluations.values()))
    all_notes = [ACCURACY_CONVENTION, *notes, *describe_attacks(first)]
    for method, evaluation in evaluations.items():
        all_notes += distortion_notes(evaluation, labels.get(method, method))
    if missing:
        all_notes.append(f"Paper rows not evaluated here: {', '.join(missing)}.")
    if any(r.attack.startswith("worst-case") for r in rows):
        all_notes.append("Worst case: per sample, the sample counts as robust only if no attack of that norm broke "
                         "it within that eps (an example found at a smaller eps counts at every larger one).")
    markdown = to_markdown(rows, labels, title, all_notes)
    write_text_atomic(out_dir / "results.md", markdown)
    to_csv(rows, labels, out_dir / "results.csv")
    return markdown


def worst_case_rows(evaluations: dict[str, Evaluation]) -> list[ComparisonRow]:
    """One row per (norm, eps): per-sample worst case over every attack of that norm."""
    budgets = sorted({(r.norm, r.eps) for ev in evaluations.values() for r in ev.records
                      if r.norm is not None and r.eps is not None})
    norms = {norm for norm, _ in budgets}
    rows = []
    for norm, eps in budgets:
        label = "worst-case" if len(norms) == 1 else f"worst-case {norm}"
        ours = {m: 100 * float(worst_case_robust(ev, norm, eps).mean()) for m, ev in evaluations.items()}
        rows.append(ComparisonRow(label, eps, ours, {m: None for m in evaluations}))
    return rows


def distortion_notes(evaluation: Evaluation, label: str) -> list[str]:
    """Mean and median L2 of successful examples of unbounded minimum-norm attacks (the MMC paper's
    C&W columns), e.g. 'CE, CW unbounded: L2 distortion mean 1.31, median 1.34 over 87 successes'."""
    notes = []
    for record in evaluation.records:
        if record.eps is None and record.norm == "l2":
            fooled = evaluation.fooled(record)
            if fooled.any():
                distances = record.l2[fooled]
                notes.append(f"{label}, {record.name.upper()} unbounded: L2 distortion mean {distances.mean():.3f}, "
                             f"median {float(np.median(distances)):.3f} over {int(fooled.sum())} successful examples.")
    return notes
