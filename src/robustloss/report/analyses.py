"""The analyses section of an experiment report: every stored analysis of the experiment's
models (its own ``analyses:`` block, and ``robustloss analyze`` runs on the same models),
each as its summary table, its plot and a link to its CSV."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from robustloss.experiments.store import AnalysisRow, ResultsStore

TITLES = {
    "gap": "Probability gap f_y − max_{y'≠y} f_y'",
    "rank": "Misclassification rank of adversarial examples (PC paper, Fig. 2)",
    "embedding": "t-SNE of penultimate features with adversarial examples (PC paper, Fig. 1/3)",
    "features": "Low-dimensional feature space with attack trajectories (MMC Fig. 3b, I-SCE Fig. 4)",
    "training-time": "Clean test error vs wall-clock training time (MMC paper, Fig. 3a)",
}


@dataclass
class AnalysisSection:
    rows: list[AnalysisRow]
    files: dict[int, list[Path]]  # analysis id -> its files, resolved

    def markdown(self, report_folder: Path) -> str:
        if not self.rows:
            return ""
        parts = ["\n## Analyses\n"]
        for row in self.rows:
            parts.append(f"\n### {_title(row)}\n\n{_summary_markdown(row.summary)}")
            for path in self.files[row.id]:
                link = os.path.relpath(path, report_folder)
                parts.append(f"![{row.name}]({link})\n" if path.suffix == ".png" else f"Data: [{path.name}]({link})\n")
        return "\n".join(parts)

    def html_blocks(self) -> list[tuple[str, object]]:
        if not self.rows:
            return []
        blocks: list[tuple[str, object]] = [("heading", "Analyses")]
        for row in self.rows:
            blocks.append(("markdown", f"### {_title(row)}\n\n{_summary_markdown(row.summary)}"))
            for path in self.files[row.id]:
                if path.suffix == ".png":
                    blocks.append(("image", (path, _caption(row))))
            data = ", ".join(p.name for p in self.files[row.id] if p.suffix == ".csv")
            if data:
                blocks.append(("paragraph", f"Data: {data} (in {self.files[row.id][0].parent})."))
        return blocks

    @property
    def plots(self) -> list[Path]:
        return [p for row in self.rows for p in self.files[row.id] if p.suffix == ".png"]


def collect_analyses(store: ResultsStore, experiment: str, scale: str, model_hashes: set[str]) -> AnalysisSection:
    rows = store.analyses(experiment=experiment, scale=scale, model_hashes=model_hashes)
    base = store.path.parent
    files = {row.id: [Path(f) if Path(f).is_absolute() else base / f for f in row.files] for row in rows}
    return AnalysisSection(rows, files)


def _title(row: AnalysisRow) -> str:
    # The store keeps the models sorted (for its key); the summary keeps the analysis's own order.
    ordered = list(dict.fromkeys(r["model"] for r in row.summary if "model" in r))
    models = ", ".join(ordered + [m for m in row.models if m not in ordered])
    return f"{TITLES.get(row.name, row.name)}: {models}"


def _caption(row: AnalysisRow) -> str:
    shown = {k: v for k, v in row.params.items() if v is not None}
    settings = ", ".join(f"{k}={v}" for k, v in shown.items()) or "defaults"
    source = "this experiment" if row.experiment else "robustloss analyze"
    return f"{row.name} ({settings}); computed by {source} on {row.created_at}"


def _summary_markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no summary)\n"
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")
