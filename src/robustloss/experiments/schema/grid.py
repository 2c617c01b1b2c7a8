"""The ``grid:`` block: its axes expanded into every combination, and overrides addressed to it.

An axis is either a list of values for the key it names (``train.seed: [0, 1]``) or a mapping of
value names to overrides. Axis names are dotted keys themselves, which is why an override of the
grid (``--set grid.train.seed=[0]``) needs its own way of finding the axis it means.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from robustloss.errors import ConfigError
from robustloss.experiments.overrides import set_dotted, split_path
from robustloss.experiments.schema.blocks import CELL_SECTIONS


def set_top_level(document: dict, key: str, value: Any) -> None:
    """Like ``set_dotted``, but grid axis names may contain dots (``grid.train.seed``): the
    longest existing axis that prefixes the key is the axis, else the whole rest is a new axis."""
    if not key.startswith("grid."):
        set_dotted(document, key, value)
        return
    grid = document.setdefault("grid", {}) or {}
    document["grid"] = grid
    rest = key[len("grid."):]
    axis = max((a for a in grid if rest == a or rest.startswith(a + ".")), key=len, default=rest)
    if rest == axis:
        grid[axis] = copy.deepcopy(value)
    else:
        entries = grid[axis]
        if not isinstance(entries, dict):
            raise ConfigError(f"{key}: grid.{axis} is a list of values; set the whole list instead")
        name, _, inner = rest[len(axis) + 1:].partition(".")
        if inner:
            entries.setdefault(name, {})
            entries[name] = dict(entries[name] or {}) | {inner: copy.deepcopy(value)}
        else:
            entries[name] = copy.deepcopy(value)


def expand_grid(grid: dict[str, Any]) -> list[tuple[dict[str, str], list[tuple[str, Any]]]]:
    """Every combination of the grid's axes: (axis -> value name, [(dotted key, value), ...]).

    An axis whose value is a list sets the key named by the axis (``train.seed: [0, 1]``); an
    axis whose value is a mapping is named: each entry maps a value name to overrides.
    """
    axes: list[tuple[str, list[tuple[str, list[tuple[str, Any]]]]]] = []
    for axis, values in grid.items():
        if isinstance(values, list):
            if not values:
                raise ConfigError(f"grid.{axis}: empty list of values")
            split_path(axis)
            axes.append((axis, [(value_name(v), [(axis, v)]) for v in values]))
        elif isinstance(values, dict):
            if not values:
                raise ConfigError(f"grid.{axis}: no values")
            entries = []
            for name, sets in values.items():
                if sets is None:
                    sets = {}
                if not isinstance(sets, dict):
                    raise ConfigError(f"grid.{axis}.{name}: expected a mapping of overrides "
                                      f"(e.g. {{train.dataset: mnist}}), got {sets!r}")
                for key in sets:
                    if split_path(key)[0] not in CELL_SECTIONS:
                        raise ConfigError(f"grid.{axis}.{name}.{key}: grid values may set "
                                          f"{', '.join(s + '.*' for s in CELL_SECTIONS)}")
                entries.append((str(name), list(sets.items())))
            axes.append((axis, entries))
        else:
            raise ConfigError(f"grid.{axis}: expected a list of values or a mapping of named overrides, "
                              f"got {values!r}")
    combos = []
    for choice in itertools.product(*(values for _, values in axes)):
        labels = {axis: name for (axis, _), (name, _) in zip(axes, choice)}
        sets = [kv for _, kvs in choice for kv in kvs]
        combos.append((labels, sets))
    return combos


def value_name(value: Any) -> str:
    """The name of a key axis's value in cell labels: a string as it is, anything else as JSON (0, true)."""
    return value if isinstance(value, str) else json.dumps(value)
