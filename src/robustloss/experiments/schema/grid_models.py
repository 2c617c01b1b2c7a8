"""The grid's own models as substitutes: resolving ``substitutes: {NAME: {grid: {AXIS: VALUE}}}``.

A grid reference names another cell of the same experiment: the current cell's values, with the
axes the reference names set to its values. The substitute is that cell's training config exactly as
the cell itself resolves it (grid values, scale preset, ``--set``), so a scale that swaps the model
or shortens training changes the substitute with it, and the two hash to the same model folder.
"""

from __future__ import annotations

from typing import Any

from robustloss.errors import ConfigError
from robustloss.experiments.schema.blocks import ExperimentFile
from robustloss.experiments.schema.cell import resolve_train
from robustloss.experiments.schema.grid import value_name
from robustloss.experiments.schema.substitutes import GRID_REFERENCE, GridModel
from robustloss.train.config import TrainConfig

CellKey = tuple[tuple[str, str], ...]  # a cell's labels, hashable


class GridModels:
    """The training configs of an experiment's cells, resolved when a grid reference first asks."""

    def __init__(self, file: ExperimentFile, combos: list[tuple[dict[str, str], list[tuple[str, Any]]]],
                 later: list[tuple[str, Any, str]]):
        self._file, self._later = file, later
        self._sets: dict[CellKey, list[tuple[str, Any]]] = {_key(labels): sets for labels, sets in combos}
        self._values: dict[str, list[str]] = {}  # axis -> its value names, in the file's order
        for labels, _ in combos:
            for axis, value in labels.items():
                self._values.setdefault(axis, [])
                if value not in self._values[axis]:
                    self._values[axis].append(value)
        self._trains: dict[CellKey, TrainConfig] = {}

    def for_cell(self, labels: dict[str, str]) -> GridModel:
        """The resolver the cell ``labels`` hands to ``resolve_substitutes``."""
        return lambda reference, where: self.train_config(labels, reference, where)

    def train_config(self, labels: dict[str, str], reference: dict[str, Any], where: str) -> TrainConfig:
        """The training config of the cell ``reference`` points to from the cell ``labels``."""
        key = _key(self.referenced_labels(labels, reference, where))
        if key not in self._trains:
            self._trains[key] = resolve_train(self._file, self._sets[key], self._later)
        return self._trains[key]

    def referenced_labels(self, labels: dict[str, str], reference: dict[str, Any], where: str) -> dict[str, str]:
        target = dict(labels)
        for axis, value in reference.items():
            at = f"{where}.{GRID_REFERENCE}.{axis}"
            if axis not in self._values:
                axes = ", ".join(self._values) or "none (the file has no grid)"
                raise ConfigError(f"{at}: not an axis of the grid; axes: {axes}")
            name = value_name(value)
            if name not in self._values[axis]:
                raise ConfigError(f"{at}: {name!r} is not a value of the grid axis {axis!r}; "
                                  f"values: {', '.join(self._values[axis])}")
            target[axis] = name
        return target


def _key(labels: dict[str, str]) -> CellKey:
    return tuple(sorted(labels.items()))
