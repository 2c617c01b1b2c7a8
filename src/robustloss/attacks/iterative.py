"""The iterative gradient loop shared by FGSM, BIM, PGD and MIM, in L-inf and L2.

    x_0 = x (+ a random point of the eps-ball if random_start)
    g_{t+1} = mu * g_t + grad_t / ||grad_t||_1           (momentum; MIM only, Dong et al. 2018)
    x_{t+1} = P_{ball(x, eps) and [0,1]}( x_t + step * direction(g_{t+1} or grad_t) )

``direction`` and the projection ``P`` are the only norm-specific parts: sign and clipping
for L-inf, the unit-L2 gradient and radial shrinking for L2.

The gradient is taken with respect to the input only. The success of every iterate is read
from the logits that the gradient computation already produced, so each sample keeps the
first iterate that fooled the model at no extra cost: the attack never reports a sample as
robust when one of its iterates was a valid adversarial example. ``early_stop=False``
returns the final iterate instead (the textbook protocol); transfer attacks need it, because
an example that only just crosses the substitute's boundary rarely fools another model. With ``restarts > 1`` the
whole attack is repeated from new random starts on the samples still standing, keeping the
first success per sample (Madry et al. 2018; Croce & Hein 2020 keep the best restart too).

``eot > 1`` (Expectation over Transformation, Athalye et al. 2018; ``robustloss.attacks.eot``) averages
each step's input gradient and class probabilities over ``eot`` forward/backward passes. A randomised
model (``robustloss.defenses``) gives a different gradient on every pass; the average follows the
expected decision function the defence really implements, and success (early stopping) is judged on the
averaged probabilities, not on one lucky draw. For a deterministic model the passes are identical, so
``eot`` only costs time; ``eot=1`` is exactly the plain attack. ``queries`` count every pass.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from robustloss.attacks.base import Attack, warn_if_budget_unreachable
from robustloss.attacks.eot import check_eot, eot_gradient, eot_hyperparameter
from robustloss.attacks.objectives import Objective


def _per_sample_norm(t: Tensor, p: float) -> Tensor:
    return t.flatten(1).norm(p=p, dim=1).view(-1, *([1] * (t.dim() - 1)))


# A budget: one float for the batch, or (N, 1, 1, 1) per sample (broadcasts over the image).
Radius = float | Tensor


class IterativeGradientAttack(Attack):
    norm = "linf"
    per_sample_eps = True

    def __init__(
        self,
        *,
        eps: float,
        steps: int,
        step_size: float | None,
        random_start: bool = False,
        momentum: float | None = None,
        restarts: int = 1,
        early_stop: bool = True,
        targeted: bool = False,
        objective: str | Objective = "ce",
        eot: int = 1,
        relative_step: float | None = None,
        start_std: float | None = None,
    ):
        """``relative_step``: the step is ``relative_step * eps`` (each sample's own eps when the call
        gives per-sample budgets) instead of the fixed ``step_size``. ``start_std``: the random start is
        x + N(0, start_std^2) projected into the ball (TRADES) instead of uniform in the ball."""
        super().__init__(eps=eps, targeted=targeted, objective=objective)
        self.early_stop = bool(early_stop)
        self.eot = check_eot(self.name, eot)
        if relative_step is not None:
            if not (relative_step > 0 and math.isfinite(relative_step)):
                raise ValueError(f"{self.name}: relative_step must be a finite number > 0, got {relative_step}")
            step_size = max(relative_step * self.eps, 1e-12)
        if start_std is not None and not (start_std > 0 and math.isfinite(start_std)):
            raise ValueError(f"{self.name}: start_std must be a finite number > 0, got {start_std}")
        self.relative_step, self.start_std = relative_step, start_std
        if steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {steps}")
        if step_size is None or step_size <= 0:
            raise ValueError(f"{self.name}: step_size must be > 0, got {step_size}")
        if restarts < 1:
            raise ValueError(f"{self.name}: restarts must be >= 1, got {restarts}")
        if restarts > 1 and not random_start:
            raise ValueError(f"{self.name}: restarts > 1 needs random_start=True (restarts would be identical)")
        self.steps, self.step_size, self.restarts = int(steps), float(step_size), int(restarts)
        self.random_start, self.momentum = bool(random_start), momentum
        warn_if_budget_unreachable(self.name, self.steps, self.step_size, self.eps)

    def hyperparameters(self) -> dict:
        params = super().hyperparameters() | {"steps": self.steps, "step_size": self.step_size}
        if self.random_start:
            params["random_start"] = True
        if self.momentum is not None:
            params["momentum"] = self.momentum
        if self.restarts > 1:
            params["restarts"] = self.restarts
        if not self.early_stop:
            params["early_stop"] = False
        if self.relative_step is not None:
            params["relative_step"] = self.relative_step
        if self.start_std is not None:
            params["start_std"] = self.start_std
        return params | eot_hyperparameter(self.eot)

    # --- norm-specific geometry (L-inf here; L2 subclasses override) ---
    def random_point(self, x: Tensor, generator: torch.Generator | None, radius: Radius) -> Tensor:
        device = generator.device if generator else "cpu"
        if self.start_std is not None:
            noise = torch.randn(x.shape, generator=generator, device=device).to(x.device, x.dtype)
            return self.projector(x, radius)(x + self.start_std * noise)
        noise = torch.rand(x.shape, generator=generator, device=device)
        return (x + (2 * noise.to(x.device, x.dtype) - 1) * radius).clamp(0, 1)

    def direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def projector(self, x: Tensor, radius: Radius) -> Callable[[Tensor], Tensor]:
        """Projection onto the eps-ball around x intersected with [0, 1]. For L-inf both are a
        box, so its bounds are computed once per run and each step is one in-place clamp."""
        lower, upper = (x - radius).clamp_(min=0), (x + radius).clamp_(max=1)
        return lambda x_adv: x_adv.clamp_(lower, upper)

    def _budgets(self, eps: Tensor | None, like: Tensor) -> tuple[Radius, Radius]:
        """(radius, step) for the batch: floats, or per-sample (N, 1, 1, 1) tensors."""
        if eps is None:
            return self.eps, self.step_size
        radius = eps.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))
        return radius, (self.relative_step * radius if self.relative_step is not None else self.step_size)

    # --- the loop ---
    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None, eps: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        radius, step = self._budgets(eps, x)
        result = x.clone()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        queries = torch.zeros(len(x), dtype=torch.int64, device=x.device)
        for restart in range(self.restarts):
            standing = ~found  # later restarts only attack samples not yet fooled
            if not standing.any():
                break
            another_follows = restart < self.restarts - 1
            x_adv, hit, steps_used = self._one_run(model, x[standing], y[standing], goal[standing], objective,
                                                   generator, _rows_of(radius, standing), _rows_of(step, standing),
                                                   check_last=another_follows)
            result[standing] = x_adv  # the first fooling iterate, else the last iterate
            queries[standing] += steps_used
            found[standing] = hit
        queries += (~found).long()  # the final success check of a sample never fooled
        return result, queries

    def _gradient(self, model: nn.Module, x_adv: Tensor, goal: Tensor, objective: Objective
                  ) -> tuple[Tensor, Tensor]:
        """(logits, input gradient of the objective), averaged over ``eot`` passes when eot > 1."""
        return eot_gradient(model, x_adv, lambda logits: objective(logits, goal, self.targeted), self.eot)

    def _one_run(self, model, x, y, goal, objective, generator, radius: Radius, step_size: Radius,
                 check_last: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(returned images, fooled?, model evaluations used) for one start. The last iterate is
        checked here only when another restart follows; otherwise the caller's final check does it.

        Active set: with early stopping, a sample that has its adversarial example leaves the batch,
        so later steps compute only on the samples still standing. Every per-sample quantity (the
        random start, drawn for the whole batch first; the momentum; the L-inf box) stays that
        sample's own, so the result does not depend on which batch-mates remain; only floating-point
        differences between batch sizes can (measured in the tests)."""
        result = self.random_point(x, generator, radius) if self.random_start else x.clone()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        steps_used = torch.full((len(x),), self.steps * self.eot, dtype=torch.int64, device=x.device)
        rows = torch.arange(len(x), device=x.device)  # the original rows of the samples in the batch
        x_rows, y_rows, goal_rows, x_adv = x, y, goal, result.clone()
        project = self.projector(x_rows, radius)
        velocity = torch.zeros_like(x) if self.momentum is not None else None
        live = torch.ones(len(x), dtype=torch.bool, device=x.device)  # in the batch and not yet fooled
        for step in range(self.steps):
            logits, grad = self._gradient(model, x_adv, goal_rows, objective)
            x_adv = x_adv.detach()

            if self.early_stop:
                newly = self.is_success(logits.detach(), y_rows, goal_rows) & live
                result[rows[newly]] = x_adv[newly]
                steps_used[rows[newly]] = (step + 1) * self.eot  # judged on all the passes of this step
                found[rows[newly]] = True
                live &= ~newly
                if not live.any():  # every sample already has its adversarial example: the rest is wasted work
                    return result, found, steps_used
                if self.active_set and newly.any():
                    rows, x_rows, y_rows, goal_rows, x_adv, grad = (t[live] for t in (rows, x_rows, y_rows, goal_rows,
                                                                                      x_adv, grad))
                    velocity = velocity[live] if velocity is not None else None
                    radius, step_size = _rows_of(radius, live), _rows_of(step_size, live)
                    project, live = self.projector(x_rows, radius), live[live]

            if velocity is not None:
                velocity = self.momentum * velocity + grad / _per_sample_norm(grad, 1).clamp_min(1e-12)
                grad = velocity
            if isinstance(step_size, Tensor):
                x_adv = project(x_adv.add_(self.direction(grad) * step_size))
            else:
                x_adv = project(x_adv.add_(self.direction(grad), alpha=step_size))
        if check_last:
            with torch.no_grad():
                newly = self.is_success(model(x_adv), y_rows, goal_rows) & live
            steps_used[rows[live]] += 1  # one more forward for every sample still standing
            found[rows[newly]] = True
            live &= ~newly
        result[rows[live]] = x_adv[live]  # a sample never fooled returns its last iterate
        if check_last:
            result[rows[newly]] = x_adv[newly]
        return result, found, steps_used


class L2IterativeGradientAttack(IterativeGradientAttack):
    norm = "l2"

    def random_point(self, x: Tensor, generator: torch.Generator | None, radius: Radius) -> Tensor:
        if self.start_std is not None:
            return super().random_point(x, generator, radius)
        # uniform in the L2 ball: a Gaussian direction, radius eps * u^(1/d)
        device = generator.device if generator else "cpu"
        direction = torch.randn(x.shape, generator=generator, device=device).to(x.device, x.dtype)
        direction = direction / _per_sample_norm(direction, 2).clamp_min(1e-12)
        u = torch.rand((len(x),), generator=generator, device=device).to(x.device, x.dtype)
        length = radius * u.pow(1.0 / x[0].numel()).view(-1, 1, 1, 1)
        return (x + direction * length).clamp(0, 1)

    def direction(self, grad: Tensor) -> Tensor:
        return grad / _per_sample_norm(grad, 2).clamp_min(1e-12)

    def projector(self, x: Tensor, radius: Radius) -> Callable[[Tensor], Tensor]:
        def project(x_adv: Tensor) -> Tensor:
            delta = x_adv - x
            shrink = (radius / _per_sample_norm(delta, 2).clamp_min(1e-12)).clamp_max(1.0)
            return (x + delta * shrink).clamp_(0, 1)

        return project


def _rows_of(budget: Radius, rows: Tensor) -> Radius:
    """A per-sample budget restricted to ``rows`` (a float applies to every row as it is)."""
    return budget[rows] if isinstance(budget, Tensor) else budget
