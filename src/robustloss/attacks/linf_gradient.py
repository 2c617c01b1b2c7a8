"""The L-infinity gradient-sign family: FGSM, BIM, PGD and MIM.

All four are one loop with two switches:

    x_0 = x (+ uniform noise in [-eps, eps] if random_start)
    g_{t+1} = mu * g_t + grad_t / ||grad_t||_1           (momentum; MIM only, Dong et al. 2018)
    x_{t+1} = clip_[0,1]( clip_{x, eps}( x_t + step * sign(g_{t+1} or grad_t) ) )

* FGSM (Goodfellow et al. 2015): 1 step of size eps.
* BIM (Kurakin et al. 2016): iterative, no random start. PC paper default: 10 steps of 0.01.
* PGD (Madry et al. 2018): BIM from a random start. PC paper default: 40 steps of 0.01.
* MIM (Dong et al. 2018): BIM with momentum, decay mu = 1.0. PC paper default: 40 steps of 0.01.

The loss gradient is taken with respect to the input only. The success of every iterate is
read from the logits that the gradient computation already produced, so each sample keeps
the first iterate that fooled the model at no extra cost: the attack never reports a sample
as robust when one of its iterates was a valid adversarial example (the last iterate alone
can drift back across the boundary).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustloss.attacks.base import Attack, warn_if_budget_unreachable
from robustloss.attacks.objectives import Objective
from robustloss.attacks.registry import ATTACKS


class LinfGradientAttack(Attack):
    norm = "linf"

    def __init__(
        self,
        *,
        eps: float,
        steps: int,
        step_size: float,
        random_start: bool = False,
        momentum: float | None = None,
        targeted: bool = False,
        objective: str = "ce",
    ):
        super().__init__(eps=eps, targeted=targeted, objective=objective)
        if steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {steps}")
        if step_size <= 0:
            raise ValueError(f"{self.name}: step_size must be > 0, got {step_size}")
        self.steps, self.step_size = int(steps), float(step_size)
        self.random_start, self.momentum = bool(random_start), momentum
        warn_if_budget_unreachable(self.name, self.steps, self.step_size, self.eps)

    def hyperparameters(self) -> dict:
        params = super().hyperparameters() | {"steps": self.steps, "step_size": self.step_size}
        if self.random_start:
            params["random_start"] = True
        if self.momentum is not None:
            params["momentum"] = self.momentum
        return params

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        lower, upper = (x - self.eps).clamp_min(0), (x + self.eps).clamp_max(1)
        x_adv = x.clone()
        if self.random_start:
            noise = torch.rand(x.shape, generator=generator, device=generator.device if generator else "cpu")
            x_adv = (x + (2 * noise.to(x.device, x.dtype) - 1) * self.eps).clamp(0, 1)
        velocity = torch.zeros_like(x) if self.momentum is not None else None

        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best = x_adv.clone()
        queries = torch.full((len(x),), self.steps + 1, dtype=torch.int64, device=x.device)
        for step in range(self.steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            gain = objective(logits, goal, self.targeted)
            (grad,) = torch.autograd.grad(gain.sum(), x_adv)
            x_adv = x_adv.detach()

            newly = self.is_success(logits.detach(), y, goal) & ~found
            best[newly] = x_adv[newly]
            queries[newly] = step + 1
            found |= newly

            if velocity is not None:
                l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                velocity = self.momentum * velocity + grad / l1
                direction = velocity.sign()
            else:
                direction = grad.sign()
            x_adv = torch.min(torch.max(x_adv + self.step_size * direction, lower), upper)
        return torch.where(found.view(-1, 1, 1, 1), best, x_adv), queries


@ATTACKS.register("fgsm")
class FGSM(LinfGradientAttack):
    """Fast gradient sign method: one step of size eps."""

    name = "fgsm"

    def __init__(self, *, eps: float, targeted: bool = False, objective: str = "ce"):
        super().__init__(eps=eps, steps=1, step_size=max(eps, 1e-12), targeted=targeted, objective=objective)

    def hyperparameters(self) -> dict:
        return Attack.hyperparameters(self)


@ATTACKS.register("bim")
class BIM(LinfGradientAttack):
    name = "bim"

    def __init__(self, *, eps: float, steps: int = 10, step_size: float = 0.01, targeted: bool = False, objective: str = "ce"):
        super().__init__(eps=eps, steps=steps, step_size=step_size, targeted=targeted, objective=objective)


@ATTACKS.register("pgd")
class PGD(LinfGradientAttack):
    name = "pgd"

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 40,
        step_size: float = 0.01,
        random_start: bool = True,
        targeted: bool = False,
        objective: str = "ce",
    ):
        super().__init__(
            eps=eps, steps=steps, step_size=step_size, random_start=random_start, targeted=targeted, objective=objective
        )


@ATTACKS.register("mim")
class MIM(LinfGradientAttack):
    name = "mim"

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 40,
        step_size: float = 0.01,
        decay: float = 1.0,
        targeted: bool = False,
        objective: str = "ce",
    ):
        super().__init__(
            eps=eps, steps=steps, step_size=step_size, momentum=decay, targeted=targeted, objective=objective
        )
