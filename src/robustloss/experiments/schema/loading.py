"""Load an experiment file: read and validate the YAML, apply the scale preset and ``--set``, and
resolve every grid cell.

``load_experiment`` is the entry point for a path (or a shipped experiment's name) and puts the
file and line in front of any error; ``resolve_experiment`` does the work on an already parsed
mapping. Overrides of the grid or of the file's metadata reshape the experiment before the grid
is expanded; the others (``train``, ``evaluate``, ``substitutes``, ``vars``) are applied per cell.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from robustloss.config import from_dict, read_yaml, yaml_error_text
from robustloss.errors import ConfigError
from robustloss.experiments.overrides import parse_assignment, split_path
from robustloss.experiments.schema.analysis_checks import check_analysis
from robustloss.experiments.schema.blocks import CELL_SECTIONS, SCALES, Experiment, ExperimentFile
from robustloss.experiments.schema.cell import resolve_cell
from robustloss.experiments.schema.grid import expand_grid, set_top_level
from robustloss.experiments.schema.grid_models import GridModels
from robustloss.experiments.schema.locate import key_lines, locate
from robustloss.experiments.schema.sweep_checks import check_sweep
from robustloss.experiments.shipped import find_experiment


def load_experiment(path: str | Path, scale: str | None = None, overrides: list[str] | tuple = ()) -> Experiment:
    """The experiment in the YAML file ``path``, or the shipped experiment of that name (``pc-table1``)."""
    path = find_experiment(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected an experiment YAML file such as configs/pc_table1.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected an experiment YAML file)") from None
    try:
        raw = read_yaml(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_text(err)}") from None
    lines = key_lines(text)
    try:
        return resolve_experiment(raw, scale, overrides, path=path)
    except ConfigError as err:
        raise ConfigError(locate(str(err), path, lines)) from None


def resolve_experiment(raw: Any, scale: str | None = None, overrides: list[str] | tuple = (),
                       path: Path | None = None) -> Experiment:
    """The experiment in an already parsed YAML mapping ``raw``; errors name the key but not the line."""
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top of the file (name:, train:, evaluate:, ...)")
    if "name" not in raw:
        raise ConfigError("name: required (the experiment's name, e.g. name: pc-table1)")
    document = copy.deepcopy(raw)
    file = from_dict(ExperimentFile, document)
    if scale is not None and scale not in SCALES:
        raise ConfigError(f"--scale {scale}: unknown scale; valid scales: {', '.join(SCALES)}")
    if scale is not None and scale not in file.scales:
        have = ", ".join(file.scales) or "none"
        raise ConfigError(f"scales: this file has no {scale!r} preset (it has: {have})")

    preset = dict(file.scales.get(scale, {})) if scale else {}
    assignments = [parse_assignment(a) for a in overrides]
    # Overrides of the grid (or of metadata) reshape the experiment itself; the rest are per cell.
    top_level = [(k, v) for k, v in [*preset.items(), *assignments] if split_path(k)[0] not in CELL_SECTIONS]
    if top_level:
        for key, value in top_level:
            set_top_level(document, key, value)
        file = from_dict(ExperimentFile, document)
    per_cell = [(k, v, f"scale {scale}") for k, v in preset.items() if split_path(k)[0] in CELL_SECTIONS]
    per_cell += [(k, v, "--set") for k, v in assignments if split_path(k)[0] in CELL_SECTIONS]

    combos = expand_grid(file.grid)
    grid_models = GridModels(file, combos, per_cell)  # for substitutes that are other cells' models
    cells = [resolve_cell(file, labels, sets, per_cell, grid_models.for_cell(labels)) for labels, sets in combos]
    if file.sweep is not None:
        check_sweep(file.sweep, file.grid, cells)
    for i, analysis in enumerate(file.analyses):
        check_analysis(analysis, cells, f"analyses[{i}]")
    return Experiment(file=file, path=path, scale=scale or "base", cells=cells, overrides=list(overrides))
