"""Ready-made attack plans (lists of ``AttackSpec``, see ``robustloss.evaluate.config``)."""

from __future__ import annotations

from typing import Any

from robustloss.evaluate.config import AttackSpec


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
