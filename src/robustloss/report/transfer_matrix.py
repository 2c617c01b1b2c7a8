"""The transfer matrix: accuracy of every target model under examples crafted on every substitute.

An experiment whose transfer attacks craft on the grid's own models (``substitutes: {X: {grid:
{method: X}}}``, MMC Fig. 4) holds, for each target cell, one record per (attack, substitute, eps).
The substitute of a record is the model folder it was crafted on, which the runner names by the
training config's hash; matching it with the runs' ``train_hash`` gives the source model, so the
matrix is read from what was run, not from attack labels. Transfer attacks from models outside the
grid (PC Table 3's separately trained cnn3) have no row to go in, and are left to the table.

One matrix per (section, crafting attack, eps): rows the substitutes (sources), columns the targets,
cells the accuracy (%) averaged over seeds. The diagonal, where the substitute is the target itself,
is a white-box attack; it is kept, and flagged for the figure and the notes. ``write_transfer_matrices``
writes the CSV and the heat maps and returns the report's pieces.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustloss.evaluate.records import AttackRecord, Evaluation
from robustloss.report.render import write_text_atomic
from robustloss.report.transfer_matrix_figure import plot_transfer_matrices

DIAGONAL_NOTE = ("The diagonal (substitute = target, outlined in the heat maps) is the target attacked through "
                 "itself: a white-box attack with the transfer attack's settings, not a transfer. It is the "
                 "reference the other cells of its column are read against.")


@dataclass
class MatrixRun:
    """What the matrix needs of one stored run."""

    label: str  # the model's name in the matrix (its grid values, seeds and section left out)
    section: str
    train_hash: str  # the name of its model folder: how records that crafted on it point to it
    evaluation: Evaluation | None


@dataclass
class TransferMatrix:
    section: str
    attack: str  # the attack run on the substitute, e.g. "PGD"
    eps: float | None
    sources: list[str]  # rows: substitute models
    targets: list[str]  # columns: target models
    values: np.ndarray  # (sources, targets) accuracy (%), mean over seeds; NaN where not evaluated

    @property
    def title(self) -> str:
        budget = "" if self.eps is None else f", ε = {eps_text(self.eps)}"
        return f"{self.attack}{budget}"

    def value(self, source: str, target: str) -> float:
        return float(self.values[self.sources.index(source), self.targets.index(target)])


@dataclass
class TransferMatrixFiles:
    matrices: list[TransferMatrix]
    csv: Path
    plots: list[tuple[Path, str]] = field(default_factory=list)  # (PNG, caption)

    def markdown(self) -> str:
        lines = ["\n## Transfer matrix\n"]
        lines += [f"![{caption}]({path.name})\n" for path, caption in self.plots]
        lines += [matrix_markdown(m) for m in self.matrices]
        lines += [f"- {DIAGONAL_NOTE}", f"\nValues: [{self.csv.name}]({self.csv.name})\n"]
        return "\n".join(lines)

    def html_blocks(self) -> list[tuple[str, object]]:
        blocks: list[tuple[str, object]] = [("heading", "Transfer matrix")]
        blocks += [("image", plot) for plot in self.plots]
        blocks += [("markdown", matrix_markdown(m)) for m in self.matrices]
        blocks += [("paragraph", DIAGONAL_NOTE), ("paragraph", f"Values: {self.csv.name} (beside this page).")]
        return blocks


def eps_text(eps: float) -> str:
    """A short decimal as it is (0.3; 0.2 is also 51/255, but nobody writes it so), else 8/255 for a budget
    on the 1/255 grid (CIFAR's convention), else the number."""
    steps = eps * 255
    if abs(eps - round(eps, 3)) < 1e-12 or not 0 < eps < 1 or abs(steps - round(steps)) > 1e-6:
        return f"{eps:g}"
    return f"{round(steps)}/255"


# -- collecting -------------------------------------------------------------------------------
def collect_transfer_matrices(runs: list[MatrixRun]) -> list[TransferMatrix]:
    """Every matrix the runs' records fill: one per section, crafting attack and eps, in the grid's order."""
    label_of = {(r.section, r.train_hash): r.label for r in runs}
    any_label_of = {r.train_hash: r.label for r in runs}  # a source in another section still has a name
    order = list(dict.fromkeys(r.label for r in runs))
    cells: dict[tuple, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    titles: dict[str, str] = {}  # attack key -> its title, in the plan's order
    for run in runs:
        for record in (run.evaluation.records if run.evaluation is not None else []):
            folder = _substitute_folder(record)
            source = label_of.get((run.section, folder), any_label_of.get(folder)) if folder else None
            if source is None:
                continue
            key = (run.section, _attack_key(record), record.eps)
            titles[key[1]] = _attack_title(record)
            cells[key][(source, run.label)].append(100 * run.evaluation.accuracy(record))
    names = _distinct_titles(titles)
    sections = list(dict.fromkeys(r.section for r in runs))
    matrices = []
    for (section, attack, eps), values in sorted(cells.items(), key=lambda kv: _sort_key(kv[0], sections, titles)):
        sources = [m for m in order if any(s == m for s, _ in values)]
        targets = [m for m in order if any(t == m for _, t in values)]
        grid = np.full((len(sources), len(targets)), np.nan)
        for (source, target), accuracies in values.items():
            grid[sources.index(source), targets.index(target)] = float(np.mean(accuracies))
        matrices.append(TransferMatrix(section, names[attack], eps, sources, targets, grid))
    return matrices


def _substitute_folder(record: AttackRecord) -> str | None:
    """The name of the model folder a transfer record crafted on (a folder or its model.pt), else None."""
    substitute = record.params.get("substitute")
    if not isinstance(substitute, str) or not substitute:
        return None
    path = Path(substitute)
    return path.parent.name if path.suffix == ".pt" else path.name


def _attack_key(record: AttackRecord) -> str:
    """What makes two records the same crafting attack: its method and settings, not the substitute, nor
    the objective (adaptive resolves per model) nor the budget (a matrix per eps)."""
    params = record.params
    return json.dumps({"method": params.get("method", record.attack), "targeted": bool(params.get("targeted")),
                       "method_params": params.get("method_params", {})}, sort_keys=True, default=str)


def _attack_title(record: AttackRecord) -> str:
    title = str(record.params.get("method", record.attack)).upper()
    return f"{title} (targeted)" if record.params.get("targeted") else title


def _distinct_titles(titles: dict[str, str]) -> dict[str, str]:
    """Titles per attack key; two settings of one method (PGD with 10 and 40 steps) get their steps added."""
    counts = defaultdict(int)
    for title in titles.values():
        counts[title] += 1
    out = {}
    for key, title in titles.items():
        steps = json.loads(key)["method_params"].get("steps")
        out[key] = f"{title}-{steps}" if counts[title] > 1 and steps is not None else title
    return out


def _sort_key(key: tuple, sections: list[str], attacks: dict[str, str]) -> tuple:
    """Sections in the grid's order, attacks in the plan's, budgets ascending."""
    section, attack, eps = key
    return sections.index(section), list(attacks).index(attack), math.inf if eps is None else eps


# -- text and files ---------------------------------------------------------------------------
def matrix_csv(matrices: list[TransferMatrix]) -> str:
    """One line per (section, attack, eps, substitute), one column per target (empty: not evaluated)."""
    targets = list(dict.fromkeys(t for m in matrices for t in m.targets))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["section", "attack", "eps", "substitute", *targets])
    for m in matrices:
        for i, source in enumerate(m.sources):
            values = [m.values[i, m.targets.index(t)] if t in m.targets else math.nan for t in targets]
            writer.writerow([m.section, m.attack, "" if m.eps is None else f"{m.eps:.6g}", source,
                             *("" if math.isnan(v) else f"{v:.4f}" for v in values)])
    return buffer.getvalue()


def matrix_markdown(matrix: TransferMatrix) -> str:
    """The matrix as a Markdown table; the diagonal (white-box) in italics."""
    where = f" ({matrix.section})" if matrix.section else ""
    header = "| substitute ↓ / target → | " + " | ".join(matrix.targets) + " |"
    lines = [f"\n**{matrix.title}**{where}: accuracy (%)\n", header, "|---" + "|---:" * len(matrix.targets) + "|"]
    for i, source in enumerate(matrix.sources):
        cells = []
        for j, target in enumerate(matrix.targets):
            value = matrix.values[i, j]
            text = "—" if math.isnan(value) else f"{value:.1f}"
            cells.append(f"*{text}*" if source == target else text)
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_transfer_matrices(runs: list[MatrixRun], out: str | Path, stem: str) -> TransferMatrixFiles | None:
    """OUT/STEM-transfer-matrix.csv and a heat-map PNG per section; None when no transfer attack crafted
    on a model of the experiment (nothing to draw)."""
    matrices = collect_transfer_matrices(runs)
    if not matrices:
        return None
    out = Path(out)
    csv_path = write_text_atomic(out / f"{stem}-transfer-matrix.csv", matrix_csv(matrices))
    sections = list(dict.fromkeys(m.section for m in matrices))
    plots = []
    for section in sections:
        tag = f"-{_slug(section)}" if len(sections) > 1 and section else ""
        where = f" ({section})" if section else ""
        title = f"Transfer matrix{where}: {_what_ran(runs, section)}"
        path = plot_transfer_matrices([m for m in matrices if m.section == section],
                                      out / f"{stem}-transfer-matrix{tag}.png", title=title)
        caption = (f"Accuracy (%) of each target model (columns) under adversarial examples crafted on each "
                   f"substitute model (rows){where}; outlined: substitute = target (white-box).")
        plots.append((path, caption))
    return TransferMatrixFiles(matrices, csv_path, plots)


def _what_ran(runs: list[MatrixRun], section: str) -> str:
    """The data and model the section's runs used (a demo scale runs a CIFAR-10 section on mnist-5k)."""
    metas = [r.evaluation.meta for r in runs if r.section == section and r.evaluation is not None]
    parts = [", ".join(dict.fromkeys(str(m[key]) for m in metas if m.get(key))) for key in ("dataset", "model")]
    return " · ".join(p for p in parts if p) or "accuracy (%)"


def _slug(text: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in text).strip("-")
