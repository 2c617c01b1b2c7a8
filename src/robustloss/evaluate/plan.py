"""An evaluation plan: which attacks, with which hyper-parameters, at which budgets.

``AttackSpec.attack`` is a registered attack (``pgd``) or a preset (``cw-pc-100``); ``params``
override the preset's. ``eps`` lists budgets; ``None`` runs a minimum-norm attack unbounded or
an attack without a norm budget (noise, rotation). Targeted attacks get targets drawn by the
engine (``targets``: ``random`` - a uniformly random wrong class, seeded - or ``next`` - y + 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from robustloss.attacks import ATTACKS, PRESETS, create_attack


@dataclass
class AttackSpec:
    attack: str  # registered attack name or preset name
    eps: list[float | None] = field(default_factory=lambda: [None])
    params: dict[str, Any] = field(default_factory=dict)  # everything but eps
    label: str = ""  # display name; defaults to the attack (or preset) name
    targets: Literal["random", "next"] = "random"

    def resolved(self) -> tuple[str, dict[str, Any]]:
        """(attack name, parameters) with a preset expanded."""
        if self.attack not in ATTACKS and self.attack in PRESETS:
            preset = PRESETS.get(self.attack)
            return preset.attack, {**preset.params, **self.params}
        return self.attack, dict(self.params)

    @property
    def name(self) -> str:
        return self.label or self.attack

    def build(self, eps: float | None):
        attack, params = self.resolved()
        return create_attack(attack, eps=eps, **params)


# Table 1 of the PC paper (white-box, MNIST family): FGSM; BIM 10 steps; PGD and MIM 40
# steps; step 0.01; untargeted; eps in {0.1, 0.2, 0.3}. The attack defaults are these
# values, so the plan only names attacks and budgets.
PC_TABLE1_GRAY_EPS = [0.1, 0.2, 0.3]


def pc_table1_plan(eps: list[float] | None = None, objective: str = "ce", **overrides: Any) -> list[AttackSpec]:
    eps = list(eps or PC_TABLE1_GRAY_EPS)
    plan = []
    for name in ("fgsm", "bim", "pgd", "mim"):
        params = {"objective": objective}
        if name != "fgsm":
            params |= overrides
        plan.append(AttackSpec(name, eps, params))
    return plan
