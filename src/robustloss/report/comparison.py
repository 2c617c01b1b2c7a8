"""Our accuracies beside a paper's, in the paper's row order.

Rows come from the published table (so the layout matches the paper) and values from our
per-sample records; rows we did not run are listed in the notes rather than shown empty,
and rows we ran that the paper lacks are appended.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from robustloss.evaluate.records import Evaluation
from robustloss.reference.published import PublishedTable


@dataclass
class ComparisonRow:
    attack: str
    eps: float | None  # None for the clean row
    ours: dict[str, float | None]  # method -> accuracy %
    paper: dict[str, float | None]


def our_accuracy(evaluation: Evaluation, attack: str, eps: float | None) -> float | None:
    if attack == "clean":
        return 100 * evaluation.clean_accuracy
    try:
        return 100 * evaluation.accuracy(evaluation.find(attack, eps))
    except KeyError:
        return None


def compare_with_paper(
    evaluations: dict[str, Evaluation], published: PublishedTable, dataset: str
) -> tuple[list[ComparisonRow], list[str]]:
    """(rows, paper rows we did not run) for methods keyed as in the published table."""
    keys = published.rows(dataset) or [("clean", None)]  # clean accuracy opens the table with or without a paper
    for evaluation in evaluations.values():
        for r in evaluation.records:
            key = (r.name, None if r.eps is None else round(r.eps, 6))
            if key not in keys:
                keys.append(key)
    rows, missing = [], []
    for attack, eps in keys:
        ours = {m: our_accuracy(e, attack, eps) for m, e in evaluations.items()}
        if all(v is None for v in ours.values()):
            missing.append(attack if eps is None else f"{attack} {eps:g}")
            continue
        paper = {m: published.get(dataset, attack, eps, m) for m in evaluations}
        rows.append(ComparisonRow(attack, eps, ours, paper))
    return rows, missing


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _diff(ours: float | None, paper: float | None) -> str:
    return "" if ours is None or paper is None else f"{ours - paper:+.1f}"


def to_markdown(rows: list[ComparisonRow], labels: dict[str, str], title: str, notes: list[str]) -> str:
    with_paper = any(v is not None for row in rows for v in row.paper.values())  # no paper: our columns only
    header = ["Attack", "ε"]
    for label in labels.values():
        header += [f"{label} ours", f"{label} paper", "Δ"] if with_paper else [label]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    previous = None
    for row in rows:
        if row.attack == previous:
            name = ""
        elif row.attack == "clean":
            name = "Clean"
        elif row.attack.startswith("worst-case"):
            name = "**" + row.attack.replace("worst-case", "Worst case") + "**"
        else:
            name = row.attack.upper()
        previous = row.attack
        cells = [name, "-" if row.eps is None else f"{row.eps:g}"]
        for method in labels:
            ours, paper = row.ours.get(method), row.paper.get(method)
            cells += [_fmt(ours), _fmt(paper), _diff(ours, paper)] if with_paper else [_fmt(ours)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[ComparisonRow], labels: dict[str, str], path: str | Path) -> Path:
    from robustloss.report.render import write_text_atomic

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["attack", "eps", "method", "ours", "paper", "difference"])
    for row in rows:
        for method in labels:
            ours, paper = row.ours.get(method), row.paper.get(method)
            writer.writerow([
                row.attack, "" if row.eps is None else row.eps, method,
                "" if ours is None else round(ours, 2), "" if paper is None else paper,
                "" if ours is None or paper is None else round(ours - paper, 2),
            ])
    return write_text_atomic(path, buffer.getvalue())  # a full disk leaves the previous file, not half a one
