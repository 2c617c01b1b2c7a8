"""The ``substitutes:`` block: the models a transfer attack crafts its examples on.

An attack names one as ``substitute: "@NAME"``. A cell trains only the substitutes its attacks
reference, and each inherits the data settings of the cell's own model, so the substitute sees
the same data unless the file says otherwise.

An entry may instead be a grid reference, ``NAME: {grid: {AXIS: VALUE}}``: the substitute is the
model of another grid cell (the one with VALUE on AXIS and the current cell's values on the other
axes), with that cell's resolved training config. A transfer matrix needs this (MMC Fig. 4: every
model is both a target and a substitute): equal training configs share one model folder, so each
model is trained once, whichever cell needs it first. ``grid_models.GridModels`` resolves them.
"""

from __future__ import annotations

from typing import Any, Callable

from robustloss.config import from_dict
from robustloss.errors import ConfigError
from robustloss.evaluate.config import AttackSpec, EvaluateConfig
from robustloss.train.config import TrainConfig

GRID_REFERENCE = "grid"  # the key of a substitute entry that names a grid cell's model

# (axis -> value name, "substitutes.NAME") -> the training config of that grid cell, for the current cell
GridModel = Callable[[dict[str, str], str], TrainConfig]


def substitute_reference(spec: AttackSpec) -> str | None:
    """NAME when the attack uses ``substitute: "@NAME"`` (a model from ``substitutes:``), else None."""
    reference = spec.resolved()[1].get("substitute")
    return reference[1:] if isinstance(reference, str) and reference.startswith("@") else None


def grid_reference(entry: Any, where: str) -> dict[str, str] | None:
    """The ``{AXIS: VALUE}`` of a substitute entry ``{grid: {...}}``, else None (an ordinary entry)."""
    if not isinstance(entry, dict) or GRID_REFERENCE not in entry:
        return None
    others = sorted(set(entry) - {GRID_REFERENCE})
    if others:  # another key would make it a different model than the cell's, defeating the reference
        raise ConfigError(f"{where}: a grid reference is exactly that cell's model and takes no other keys "
                          f"(got {', '.join(others)}); change the grid value's own settings instead")
    reference = entry[GRID_REFERENCE]
    if not isinstance(reference, dict) or not reference:
        raise ConfigError(f"{where}.{GRID_REFERENCE}: expected a mapping of grid axis to value, "
                          f"e.g. {{method: SCE}}, got {reference!r}")
    return dict(reference)


SUBSTITUTE_INHERITS = ("dataset", "max_train_samples", "batch_size", "augment", "seed")


def resolve_substitutes(train: dict, substitutes: dict, evaluate: EvaluateConfig,
                        grid_model: GridModel | None = None) -> dict[str, TrainConfig]:
    """The substitute models the cell's transfer attacks reference (``substitute: "@NAME"``);
    ``grid_model`` resolves grid references (None: the file has no grid to refer to)."""
    wanted = []
    for spec in evaluate.plan():
        name = substitute_reference(spec)
        if name is not None:
            if name not in substitutes:
                have = ", ".join(substitutes) or "none defined"
                raise ConfigError(f"evaluate.attacks: {spec.name} uses substitute '@{name}'; substitutes: {have}")
            wanted.append(name)
    out = {}
    for name in dict.fromkeys(wanted):
        where = f"substitutes.{name}"
        reference = grid_reference(substitutes[name], where)
        if reference is not None:
            if grid_model is None:
                raise ConfigError(f"{where}: a grid reference needs the experiment's grid to resolve it")
            out[name] = grid_model(reference, where)
            continue
        settings = {k: train[k] for k in SUBSTITUTE_INHERITS if k in train} | dict(substitutes[name])
        out[name] = from_dict(TrainConfig, settings, path=where)
    return out
