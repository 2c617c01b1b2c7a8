"""Read a paper's table (shipped as CSV in this folder) into a lookup."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

from robustloss.registry import Registry

TABLES: Registry = Registry("published table")
TABLES.register("pc-table1")("pc_table1.csv")


@dataclass
class PublishedTable:
    name: str
    cells: dict[tuple[str, str, float | None, str], float]  # (dataset, attack, param, method) -> accuracy %

    def get(self, dataset: str, attack: str, param: float | None, method: str) -> float | None:
        key = (dataset, attack, None if param is None else round(float(param), 6), method)
        return self.cells.get(key)

    def rows(self, dataset: str) -> list[tuple[str, float | None]]:
        """(attack, param) pairs of ``dataset`` in the paper's order."""
        seen: list[tuple[str, float | None]] = []
        for ds, attack, param, _ in self.cells:
            if ds == dataset and (attack, param) not in seen:
                seen.append((attack, param))
        return seen


def load_published(name: str) -> PublishedTable:
    filename = TABLES.get(name)
    text = resources.files("robustloss.reference").joinpath(filename).read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    cells = {}
    for row in csv.DictReader(lines):
        param = round(float(row["param"]), 6) if row["param"] else None
        cells[(row["dataset"], row["attack"], param, row["method"])] = float(row["accuracy"])
    return PublishedTable(name, cells)


# Which published dataset column a robustloss dataset is compared with. mnist-5k is a
# 5,000-image subset of MNIST, so its numbers sit beside the paper's MNIST column.
PAPER_DATASET = {
    "mnist-5k": "mnist",
    "mnist": "mnist",
    "kmnist": "kmnist",
    "fashion-mnist": "fashion-mnist",
    "cifar10": "cifar10",
    "svhn": "svhn",
}
