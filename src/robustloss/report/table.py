"""A report table in a paper's layout: sections (datasets), rows (attacks x eps), columns (methods).

Every cell holds our value (mean and standard deviation over seeds, and how many seeds)
beside the published value, so every renderer (Markdown, CSV, LaTeX, HTML) shows the same
numbers. Values are percentages for accuracy metrics and raw distances for distortions.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cell:
    mean: float | None = None  # ours; None: not run
    std: float | None = None  # over seeds; None with a single seed
    n_seeds: int = 0
    paper: float | None = None  # published; None: the paper has no such entry

    @property
    def diff(self) -> float | None:
        if self.mean is None or self.paper is None:
            return None
        return self.mean - self.paper


@dataclass
class TableRow:
    row: str  # attack label, "clean" or "worst case"
    param: float | None  # eps (None where the row has no budget)
    metric: str = "accuracy"  # accuracy | error_rate | mean_l2 | median_l2 | mean_linf
    cells: dict[str, Cell] = field(default_factory=dict)  # column (method) -> cell

    @property
    def shown_param(self) -> str:
        return "-" if self.param is None else f"{self.param:g}"


@dataclass
class TableSection:
    name: str  # e.g. "MNIST"; "" when the table has no sections
    rows: list[TableRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "demo scale: dataset cifar10 -> mnist-5k"


@dataclass
class ReportTable:
    title: str
    columns: list[str]  # methods, in the paper's order
    sections: list[TableSection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_published(self) -> bool:
        """Whether any cell has a paper value: without one (our own comparisons, such as
        at_recipes) the renderers show only our columns, not empty paper and Δ ones."""
        return any(cell.paper is not None for s in self.sections for r in s.rows for cell in r.cells.values())
