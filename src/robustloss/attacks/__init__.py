"""Attack registry: ``create_attack(name, eps=..., **params)``; contract in ``robustloss.attacks.base``."""

from robustloss.attacks.base import Attack, AttackBudgetWarning, AttackResult
from robustloss.attacks.objectives import OBJECTIVES, get_objective
from robustloss.attacks.presets import PRESETS, preset, register_preset
from robustloss.attacks.registry import ATTACKS, create_attack

# Importing the attack modules registers them.
from robustloss.attacks import (  # noqa: E402,F401
    apgd,
    apgd_targeted,
    carlini_wagner,
    corruptions,
    deepfool,
    fab,
    linf_gradient,
    simba,
    spsa,
    square,
    transfer,
)

__all__ = ["Attack", "AttackResult", "AttackBudgetWarning", "ATTACKS", "OBJECTIVES", "PRESETS", "create_attack",
           "get_objective", "preset", "register_preset"]
