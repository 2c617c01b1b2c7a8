"""One grid cell resolved into a ``RunCell``: the overrides applied in order, ``${...}`` filled
in, the configs validated and the names checked.

The order is the base file, the cell's grid values, then the scale preset and ``--set`` (which
win, and are recorded as the cell's ``changes`` for the report); variables are substituted last
so that any of these layers may set them. Every error names the grid cell it came from.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from robustloss.config import from_dict
from robustloss.errors import ConfigError
from robustloss.evaluate.config import EvaluateConfig
from robustloss.experiments.overrides import set_dotted, split_path, substitute
from robustloss.experiments.schema.blocks import ExperimentFile, RunCell
from robustloss.experiments.schema.cell_checks import check_names
from robustloss.experiments.schema.substitutes import GridModel, resolve_substitutes
from robustloss.train.config import TrainConfig


def resolve_cell(file: ExperimentFile, labels: dict[str, str], cell_sets: list[tuple[str, Any]],
                 later: list[tuple[str, Any, str]], grid_model: GridModel | None = None) -> RunCell:
    """The grid cell ``labels``; ``grid_model`` resolves substitutes that are other cells' models."""
    where = ", ".join(f"{k}={v}" for k, v in labels.items())
    context = f" (grid cell {where})" if where else ""
    try:
        resolved, changes = resolved_sections(file, cell_sets, later)
        train = from_dict(TrainConfig, resolved["train"], path="train")
        evaluate = from_dict(EvaluateConfig, resolved["evaluate"], path="evaluate")
        substitutes = resolve_substitutes(resolved["train"], resolved["substitutes"], evaluate, grid_model)
        check_names(train, evaluate, substitutes)
    except ConfigError as err:
        raise ConfigError(f"{err}{context}") from None
    return RunCell(labels=labels, train=train, evaluate=evaluate, substitutes=substitutes, changes=changes)


def resolve_train(file: ExperimentFile, cell_sets: list[tuple[str, Any]],
                  later: list[tuple[str, Any, str]]) -> TrainConfig:
    """Only the cell's training config: what a grid reference to the cell needs (its substitutes may
    refer back to the referring cell, so resolving the whole cell here could go round in a circle)."""
    resolved, _ = resolved_sections(file, cell_sets, later)
    return from_dict(TrainConfig, resolved["train"], path="train")


def resolved_sections(file: ExperimentFile, cell_sets: list[tuple[str, Any]],
                      later: list[tuple[str, Any, str]]) -> tuple[dict[str, Any], list[str]]:
    """The cell's ``train``/``evaluate``/``substitutes`` mappings with the overrides applied in order and
    ``${...}`` filled in, and what the scale and ``--set`` changed (for the report)."""
    doc = {"train": copy.deepcopy(file.train), "evaluate": copy.deepcopy(file.evaluate),
           "substitutes": copy.deepcopy(file.substitutes), "vars": copy.deepcopy(file.vars)}
    for key, value in cell_sets:
        set_dotted(doc, key, value)
    changes = []
    for key, value, origin in later:
        old = _get(doc, key)
        set_dotted(doc, key, value)
        if old != value:
            changes.append(f"{key}: {_brief(old)} -> {_brief(value)} ({origin})")
    variables = doc["vars"]
    resolved = {k: substitute(doc[k], variables, k) for k in ("train", "evaluate", "substitutes")}
    return resolved, changes


def _get(doc: dict, key: str) -> Any:
    node: Any = doc
    for part in split_path(key):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
