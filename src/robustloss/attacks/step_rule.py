"""The default step size of iterative attacks, in one place: Madry et al. (2018)'s rule of thumb.

With ``steps`` steps of ``2.5 * eps / steps`` a walk can cross the eps-ball 1.25 times, so it reaches
the boundary from any start and still has room to move along it. Attacks, adversarial training, the
overfitting guard, the diagnostics' probes and the analyses all use this function, so changing the
rule changes it everywhere. ``eps`` may be a tensor (one budget per sample)."""

from __future__ import annotations

from typing import TypeVar

STEP_FACTOR = 2.5  # how many eps the whole walk may travel

Budget = TypeVar("Budget")


def default_step_size(eps: Budget, steps: int) -> Budget:
    """``2.5 * eps / steps`` (a float, or a tensor for per-sample budgets)."""
    return STEP_FACTOR * eps / steps
