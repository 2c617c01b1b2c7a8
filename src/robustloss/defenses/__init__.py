"""Inference-time defences: wrappers that take a trained model and return a defended one.

``apply_defense(model, "random-resize-pad", draws=5)`` wraps ``model``; the result is an ``nn.Module``
mapping [0, 1] images to logits, so every attack and the evaluation engine use it unchanged. Stochastic
defences need EOT attacks (``eot=`` on FGSM/BIM/PGD/MIM/PGD-L2/APGD/C&W/DeepFool) for an honest robustness number; the
diagnostics warn when that is missing (``robustloss.evaluate.stochastic.record_stochasticity``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustloss.defenses.randomization import RandomResizePad
from robustloss.errors import ConfigError
from robustloss.registry import Registry

DEFENSES: Registry = Registry("defense")
DEFENSES.register("random-resize-pad")(RandomResizePad)


def defense_parameters(name: str) -> list[str]:
    """The keyword parameters of a defence (the wrapped model is passed separately)."""
    return [p for p in DEFENSES.parameters(name) if p != "model"]


def apply_defense(model: nn.Module, name: str, **params: Any) -> nn.Module:
    """Wrap ``model`` in the defence registered as ``name``; unknown names or parameters fail with the
    valid ones, bad values with what is allowed."""
    valid = defense_parameters(name)  # raises UnknownNameError listing the defences
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for defense {name!r}; "
                          f"valid parameters: {', '.join(valid) or '(none)'}")
    try:
        return DEFENSES.get(name)(model, **params)
    except ValueError as error:  # a bad value: surface it as a config error the CLI prints cleanly
        raise ConfigError(str(error)) from error


__all__ = ["DEFENSES", "RandomResizePad", "apply_defense", "defense_parameters"]
