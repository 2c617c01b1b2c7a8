"""The ``substitutes:`` block: the models a transfer attack crafts its examples on.

An attack names one as ``substitute: "@NAME"``. A cell trains only the substitutes its attacks
reference, and each inherits the data settings of the cell's own model, so the substitute sees
the same data unless the file says otherwise.
"""

from __future__ import annotations

from robustloss.config import from_dict
from robustloss.errors import ConfigError
from robustloss.evaluate.config import AttackSpec, EvaluateConfig
from robustloss.train.config import TrainConfig


def substitute_reference(spec: AttackSpec) -> str | None:
    """NAME when the attack uses ``substitute: "@NAME"`` (a model from ``substitutes:``), else None."""
    reference = spec.resolved()[1].get("substitute")
    return reference[1:] if isinstance(reference, str) and reference.startswith("@") else None


SUBSTITUTE_INHERITS = ("dataset", "max_train_samples", "batch_size", "augment", "seed")


def resolve_substitutes(train: dict, substitutes: dict, evaluate: EvaluateConfig) -> dict[str, TrainConfig]:
    """The substitute models the cell's transfer attacks reference (``substitute: "@NAME"``)."""
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
        settings = {k: train[k] for k in SUBSTITUTE_INHERITS if k in train} | dict(substitutes[name])
        out[name] = from_dict(TrainConfig, settings, path=f"substitutes.{name}")
    return out
