"""The analyses behind one contract, so the CLI and the experiment runner call them alike.

An analysis takes the models to compare (``Subject``: a label, the model, its test split)
and an output folder, and returns the files it wrote (PNG + CSV) and a small summary table
(one row per model, or per model and setting) that the CLI prints and the reports show.
Output names start with ``prefix`` so analyses of different experiments can share a folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from robustloss.data.split import ImageSplit
from robustloss.registry import Registry


@dataclass
class Subject:
    label: str  # shown in legends and tables (a method name, or the run folder's name)
    model: torch.nn.Module
    test: ImageSplit
    device: torch.device
    key: str = ""  # the model folder's name (its train hash, for runner-managed models)
    folder: Path | None = None  # the model folder (metrics.csv, config.yaml), for analyses of its training


@dataclass
class AnalysisResult:
    files: list[Path]
    summary: list[dict[str, Any]]  # rows for the report's table (plain numbers and strings)
    lines: list[str] = field(default_factory=list)  # what the CLI prints


AnalysisFn = Callable[..., AnalysisResult]  # (subjects, out: Path, prefix: str, **params) -> AnalysisResult
ANALYSES: Registry[AnalysisFn] = Registry("analysis")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """CSV with the union of the rows' keys as columns, in first-seen order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")  # rows may lack a column (3-D vs 2-D)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)  # a reader never sees half a file
    return path


def run_analysis(name: str, subjects: list[Subject], out: str | Path, prefix: str = "",
                 **params: Any) -> AnalysisResult:
    """Run the registered analysis ``name`` (unknown names and parameters list the valid ones)."""

    ANALYSES.get(name)
    valid = [p for p in ANALYSES.parameters(name) if p not in ("subjects", "out", "prefix")]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        from robustloss.errors import ConfigError

        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for analysis {name!r}; "
                          f"valid parameters: {', '.join(valid) or '(none)'}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return ANALYSES.get(name)(subjects, out, prefix, **params)


def analysis_names() -> list[str]:

    return ANALYSES.names()


def analysis_parameters(name: str) -> list[str]:

    return [p for p in ANALYSES.parameters(name) if p not in ("subjects", "out", "prefix")]
