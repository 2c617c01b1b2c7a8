"""The blocks of an experiment file, as dataclasses, and the resolved experiment they become.

``ExperimentFile`` is the YAML's top level as written; ``RunCell`` is one fully resolved run and
``Experiment`` the whole resolved file. The blocks check what they can see on their own in
``__post_init__`` (a claim names a column that exists, a known scale); checks that need the
resolved cells are in the ``*_checks`` modules. ``train``/``evaluate`` stay plain mappings here
because they are validated per cell, after the grid and the overrides are applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustloss.config import to_dict
from robustloss.errors import ConfigError
from robustloss.evaluate.config import EvaluateConfig
from robustloss.experiments.schema.hashing import canonical, config_hash
from robustloss.experiments.schema.published import read_published
from robustloss.train.config import TrainConfig

SCALES = ("smoke", "demo", "paper")
CELL_SECTIONS = ("train", "evaluate", "substitutes", "vars")  # what a cell override may change


@dataclass
class ReportConfig:
    columns: str = "method"  # the grid axis whose values are the table's columns
    sections: str | None = None  # the grid axis whose values split the table


@dataclass
class ClaimSpec:
    """A comparison the paper claims: column ``better`` is more robust than column ``than`` (columns are
    values of ``report.columns``). The report's Findings test it on every row where the paper prints both
    numbers (or only ``rows``, in ``sections``), plus our worst case, and give each a verdict."""

    better: str
    than: str
    rows: list[str] | None = None  # attack rows (labels) to test; None: every row the paper prints for both
    sections: list[str] | None = None  # sections to test; None: all
    text: str = ""  # the claim in words; default "BETTER is more robust than THAN"

    @property
    def statement(self) -> str:
        return self.text or f"{self.better} is more robust than {self.than}"


@dataclass
class SweepConfig:
    """A metric plotted along one numeric grid axis (a line plot) or two (a heatmap and a surface).

    Checked against the grid and the attacks by ``check_sweep`` once the cells are resolved.
    """

    x: str = ""  # the grid axis on the plot's x
    y: str | None = None  # a second grid axis: a heatmap and a 3-D surface instead of lines
    metric: str = "accuracy"  # one of the report's metrics (robustloss.evaluate.metrics.METRICS)
    rows: list[str] = field(default_factory=list)  # attack labels to plot; empty: every attack
    eps: float | list[float] | None = None  # budgets to plot; empty: every budget of those rows
    average: list[str] = field(default_factory=list)  # more axes to average over (seed axes always are)
    log_x: bool = False
    log_y: bool = False
    x_label: str = ""  # shown on the plot; default: the axis's last part (vars.s -> s)
    y_label: str = ""

    def __post_init__(self) -> None:
        if not self.x:
            raise ConfigError("sweep.x: required: the grid axis on the plot's x (e.g. x: vars.s)")
        if self.eps is None:
            self.eps = []
        elif not isinstance(self.eps, list):
            self.eps = [self.eps]  # one budget may be written without brackets

    @property
    def axes(self) -> list[str]:
        return [self.x] if self.y is None else [self.x, self.y]


@dataclass
class AnalysisSpec:
    """An analysis (``robustloss analyze NAME``) the runner computes after the grid, over the
    experiment's trained models; its PNG, CSV and summary go into the experiment's report."""

    name: str = ""  # a registered analysis: gap, rank, embedding, features
    params: dict[str, Any] = field(default_factory=dict)  # the analysis's parameters (see `robustloss analyze NAME -h`)
    models: dict[str, list[str]] = field(default_factory=dict)  # grid axis -> values to include; empty: every model
    n_test: int | None = None  # only the first N test samples

    def __post_init__(self) -> None:
        if self.n_test is not None and self.n_test < 1:
            raise ConfigError(f"analyses: n_test must be >= 1 (or null for the whole test split), got {self.n_test}")


@dataclass
class ExperimentFile:
    """The top level of an experiment YAML (``train``/``evaluate`` are validated per cell)."""

    name: str
    title: str = ""
    paper: str = ""
    table: str = ""
    published: str | None = None
    notes: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    substitutes: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    report: ReportConfig = field(default_factory=ReportConfig)
    sweep: SweepConfig | None = None  # what `robustloss sweep` and the report plot (optional)
    analyses: list[AnalysisSpec] = field(default_factory=list)  # run after the grid; shown in the report
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: list[ClaimSpec] = field(default_factory=list)  # the paper's comparisons, tested in the report

    def __post_init__(self) -> None:
        columns = self.grid.get(self.report.columns)
        for i, claim in enumerate(self.claims):
            for name in (claim.better, claim.than):
                if isinstance(columns, dict) and name not in columns:
                    raise ConfigError(f"claims[{i}]: {name!r} is not a value of the grid axis "
                                      f"{self.report.columns!r}; values: {', '.join(map(str, columns))}")
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", self.name):
            raise ConfigError(f"name: use letters, digits, '-', '_' or '.', got {self.name!r}")
        unknown = [s for s in self.scales if s not in SCALES]
        if unknown:
            raise ConfigError(f"scales.{unknown[0]}: unknown scale; valid scales: {', '.join(SCALES)}")


@dataclass
class RunCell:
    """One fully resolved run of an experiment: a model to train and the attacks to run on it."""

    labels: dict[str, str]  # grid axis -> value name
    train: TrainConfig
    evaluate: EvaluateConfig
    substitutes: dict[str, TrainConfig]  # only those the attacks reference
    changes: list[str] = field(default_factory=list)  # what the scale/--set changed, for the report

    @property
    def name(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.labels.items()) or "base"

    @property
    def train_hash(self) -> str:
        return config_hash(self.train)

    @property
    def hash(self) -> str:
        return config_hash({"train": canonical(self.train), "evaluate": canonical(self.evaluate),
                            "substitutes": {k: canonical(v) for k, v in self.substitutes.items()}})

    def to_dict(self) -> dict:
        return {"labels": self.labels, "train": to_dict(self.train), "evaluate": to_dict(self.evaluate),
                "substitutes": {k: to_dict(v) for k, v in self.substitutes.items()}, "changes": self.changes}


@dataclass
class Experiment:
    file: ExperimentFile
    path: Path | None
    scale: str
    cells: list[RunCell]
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.file.name

    def published_path(self) -> Path | None:
        if not self.file.published:
            return None
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / self.file.published

    def document(self) -> dict:
        """What the store keeps about the experiment, so reports need nothing else."""
        return {"file": to_dict(self.file), "path": str(self.path) if self.path else None, "scale": self.scale,
                "overrides": self.overrides, "published": read_published(self.published_path())}
