"""A small hand-built report table shared by the renderer tests."""

from __future__ import annotations

import pytest

from robustloss.report.table import Cell, ReportTable, TableRow, TableSection


def make_table() -> ReportTable:
    mnist = TableSection("MNIST", [
        TableRow("clean", None, cells={"CE": Cell(99.1, None, 1, 99.2), "PC-LC": Cell(99.0, None, 1, None)}),
        TableRow("PGD", 0.1, cells={"CE": Cell(97.5, 0.3, 3, 96.3), "PC-LC": Cell(95.0, 0.25, 3, 98.4)}),
        TableRow("PGD", 0.2, cells={"CE": Cell(80.0, 1.0, 3, 80.04), "PC-LC": Cell(None, None, 0, 90.0)}),
        TableRow("C&W", None, metric="mean_l2", cells={"CE": Cell(1.23456, 0.01, 3, 1.5)}),
        TableRow("worst case", 0.1, cells={"CE": Cell(60.0, None, 1, 62.0), "PC-LC": Cell(70.0, None, 1, 65.0)}),
    ], notes=["demo scale: 5k training images"])
    cifar = TableSection("CIFAR-10", [
        TableRow("FGSM", 0.03, cells={"CE": Cell(30.0, None, 1, 28.0), "PC-LC": Cell(40.0, None, 1, 41.5)}),
    ])
    return ReportTable("Table 2: accuracy under attack (%)", ["CE", "PC-LC"], [mnist, cifar],
                       notes=["ε in [0, 1] pixel scale"])


@pytest.fixture
def table() -> ReportTable:
    return make_table()
