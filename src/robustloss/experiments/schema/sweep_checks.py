"""Checks of the ``sweep:`` block against the resolved cells, and whether a grid axis matters.

A sweep plots a metric along numeric grid axes; these checks refuse, at load time, a sweep whose
plot would be empty or flat: an axis that is not in the grid or not numeric, a metric, attack
label or budget that nothing produces, or an axis whose values all give the same run.
``check_axis_changes_runs`` is also used on its own by ``robustloss sweep``.
"""

from __future__ import annotations

import math
from typing import Any

from robustloss.config import to_dict
from robustloss.errors import ConfigError
from robustloss.evaluate.metrics import METRICS
from robustloss.experiments.overrides import split_path
from robustloss.experiments.schema.blocks import RunCell, SweepConfig
from robustloss.experiments.schema.hashing import canonical, config_hash


def check_sweep(sweep: SweepConfig, grid: dict[str, Any], cells: list[RunCell]) -> None:
    """The sweep's axes are numeric grid axes that change the runs; its metric, rows and budgets exist."""
    for key, axis in (("x", sweep.x), ("y", sweep.y)):
        if axis is None:
            continue
        if axis not in grid:
            have = ", ".join(grid) or "none (add one, e.g. grid: {vars.s: [1, 1.5, 2]})"
            raise ConfigError(f"sweep.{key}: {axis!r} is not a grid axis; grid axes: {have}")
        _check_numeric_axis(axis, grid[axis])
        check_axis_changes_runs(axis, cells, f"sweep.{key}")
    if sweep.y == sweep.x:
        raise ConfigError(f"sweep.y: the same axis as sweep.x ({sweep.x}); choose another axis or drop y")
    for axis in sweep.average:
        if axis not in grid or axis in sweep.axes:
            valid = ", ".join(a for a in grid if a not in sweep.axes) or "none"
            raise ConfigError(f"sweep.average: {axis!r} is not a grid axis besides the sweep's; valid: {valid}")
    if sweep.metric not in METRICS:
        raise ConfigError(f"sweep.metric: unknown metric {sweep.metric!r}; valid: {', '.join(METRICS)}")
    budgets: dict[str, set] = {}  # attack label -> its budgets, over every cell
    for cell in cells:
        for spec in cell.evaluate.plan():
            budgets.setdefault(spec.name, set()).update(spec.eps)
    for row in sweep.rows:
        if row != "clean" and row not in budgets:
            raise ConfigError(f"sweep.rows: no attack is labelled {row!r}; labels: {', '.join(['clean', *budgets])}")
    offered = {e for row in (sweep.rows or budgets) for e in budgets.get(row, ()) if e is not None}
    for eps in sweep.eps:
        if not any(math.isclose(eps, e, rel_tol=1e-6) for e in offered):
            have = ", ".join(f"{e:g}" for e in sorted(offered)) or "none"
            raise ConfigError(f"sweep.eps: no plotted attack runs at eps {eps:g}; their budgets: {have}")


def _check_numeric_axis(axis: str, values: Any) -> None:
    """A key axis needs numbers; a named axis needs value names that read as numbers ("128": {...})."""
    names = values if isinstance(values, list) else list(values or {})
    for value in names:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric and isinstance(value, str):
            try:
                float(value)
                numeric = True
            except ValueError:
                pass
        if not numeric:
            raise ConfigError(f"grid.{axis}: a sweep axis needs numeric values, got {value!r}")


def check_axis_changes_runs(axis: str, cells: list[RunCell], where: str) -> None:
    """Two values of the axis that give the same run mean the axis sets something nothing reads
    (a misspelt attack label under evaluate.overrides, an unused variable): the plot would be flat."""
    runs: dict[tuple, dict[str, str]] = {}  # the other axes' values -> this axis's value -> what runs
    for cell in cells:
        others = tuple((k, v) for k, v in cell.labels.items() if k != axis)
        seen = runs.setdefault(others, {})
        work = _what_runs(cell)
        same = [value for value, run in seen.items() if run == work]
        if same:
            raise ConfigError(f"{where}: grid axis {axis} changes nothing: {axis}={same[0]} and "
                              f"{axis}={cell.labels[axis]} give the same run{_unused_hint(axis, cells)}")
        seen[cell.labels[axis]] = work


def _what_runs(cell: RunCell) -> str:
    """A hash of what the cell trains and attacks with: the attacks with their overrides applied,
    rather than the overrides themselves (an override nothing picks up changes ``cell.hash`` only)."""
    evaluate = {k: v for k, v in canonical(cell.evaluate).items() if k not in ("attacks", "overrides")}
    return config_hash({"train": canonical(cell.train), "evaluate": evaluate,
                        "plan": [to_dict(spec) for spec in cell.evaluate.plan()],
                        "substitutes": {k: canonical(v) for k, v in cell.substitutes.items()}})


def _unused_hint(axis: str, cells: list[RunCell]) -> str:
    parts = split_path(axis)
    if parts[:2] == ["evaluate", "overrides"] and len(parts) > 2:
        names = {n for cell in cells for spec in cell.evaluate.plan()
                 for n in (spec.attack, spec.resolved()[0], spec.name)}
        if parts[2] not in names:
            return (f" (evaluate.overrides.{parts[2]} names no attack; use an attack's label, preset or "
                    f"name: {', '.join(sorted(names))})")
        rivals = sorted({k for cell in cells for k, v in cell.evaluate.overrides.items()
                         if k != parts[2] and len(parts) == 4 and parts[3] in (v or {})})
        if rivals:
            return (f" (evaluate.overrides.{rivals[0]} also sets {parts[3]}: an attack's label wins over its "
                    f"preset, and its preset over its attack name; sweep the winning key)")
    if parts[0] == "vars" and len(parts) == 2:
        return f" (does any value use ${{{parts[1]}}}? does the scale preset or a --set fix {axis}?)"
    return f" (does the scale preset or a --set fix {axis}?)"
