"""The attack contract.

``attack = create_attack("pgd", eps=0.3, steps=40)`` fixes the hyper-parameters (keyword
only). ``attack(model, x, y, target=None, generator=None, precision="fp32") -> AttackResult`` then:

* works on images in [0, 1] and returns images in [0, 1];
* puts the model in eval mode for the attack and restores its mode afterwards; model
  parameters are never modified and receive no ``.grad`` (gradients are taken with respect
  to the input only);
* checks the returned perturbation against the budget and raises ``AttackBudgetError``
  if it is violated (a bug, never an expected outcome). ``norm`` is "linf" or "l2" for
  norm-bounded attacks and None for attacks without a norm budget (Gaussian noise,
  rotation). Minimum-norm attacks (C&W, DeepFool) take ``eps=None`` to run unbounded and
  report the distance they needed; with a number they are held to that budget;
* judges success with one final forward pass on the returned images.

``precision="bf16"`` runs the attack's own forward passes (its gradient steps) under bfloat16
autocast for speed; the final forward pass that judges success is always float32 with autocast
off, even inside a caller's autocast region, so a sample is never reported fooled because of a
bf16 rounding artefact (see ``robustloss.precision``).

Subclasses implement ``run``, which returns the adversarial images and the number of model
evaluations each sample needed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar, final

import torch
from torch import Tensor, nn

from robustloss.attacks.objectives import Objective, check_objective_name, get_objective, resolve_objective
from robustloss.precision import autocast_context, check_precision, full_precision
from robustloss.errors import AttackBudgetError
from robustloss.models.modes import kept_modes

# Slack for float32 round-off in x + delta and clamping.
BUDGET_TOLERANCE = 1e-5


class AttackBudgetWarning(UserWarning):
    """The attack's steps cannot reach its budget (steps x step size < eps)."""


@dataclass
class AttackResult:
    x_adv: Tensor  # (N, C, H, W) in [0, 1]
    pred: Tensor  # (N,) model's class on x_adv (the adversarial class when it succeeded)
    success: Tensor  # (N,) bool: untargeted - pred != y; targeted - pred == target
    queries: Tensor  # (N,) int64 model evaluations used until the returned example was found
    linf: Tensor  # (N,) ||x_adv - x||_inf
    l2: Tensor  # (N,) ||x_adv - x||_2
    objective: str = ""  # the objective actually used ("adaptive" resolved for this model)


class Attack:
    name: ClassVar[str] = ""
    norm: ClassVar[str | None] = "linf"
    # Attacks that support it compute only on the samples that still need work (fooled samples leave
    # the batch). The per-sample results are the same either way, so this is not a hyper-parameter:
    # False keeps the full-batch loop, for benchmarks and the tests that prove the agreement.
    active_set: bool = True

    def __init__(self, *, eps: float | None, targeted: bool = False, objective: str | None = "ce"):
        if eps is not None and not (eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"{self.name}: eps must be a finite number >= 0 (or None where unbounded), got {eps}")
        self.eps = None if eps is None else float(eps)
        self.targeted = bool(targeted)
        if objective is not None:  # None: the attack uses no objective (noise, rotation)
            check_objective_name(objective)
        self.objective_name = objective  # may be "adaptive": resolved per model at call time

    def hyperparameters(self) -> dict:
        return {"eps": self.eps, "targeted": self.targeted, "objective": self.objective_name}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({params})"

    @final
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        precision: str = "fp32",
    ) -> AttackResult:
        check_precision(precision)
        if x.dim() != 4:
            raise ValueError(f"attacks take NCHW image batches, got shape {tuple(x.shape)}")
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError("attacks take images in [0, 1]; normalisation belongs inside the model")
        if self.targeted and target is None:
            raise ValueError(f"{self.name} was built with targeted=True: pass target=<labels>")
        goal = target if self.targeted else y
        objective = resolve_objective(self.objective_name, model) if self.objective_name else ""
        x = x.detach()
        with kept_modes(model):
            model.eval()
            with torch.enable_grad(), autocast_context(precision, x.device):
                x_adv, queries = self.run(model, x, y, goal, get_objective(objective) if objective else None, generator)
            x_adv = x_adv.detach().to(x.dtype)  # a bf16 step must not leak into the returned images
            self._check_budget(x, x_adv)
            with torch.no_grad(), full_precision(x.device):  # the verdict: always float32
                pred = model(x_adv).argmax(dim=1)
        success = pred == goal if self.targeted else pred != y
        diff = (x_adv - x).flatten(1)
        return AttackResult(
            x_adv=x_adv,
            pred=pred,
            success=success,
            queries=queries,
            linf=diff.abs().amax(dim=1),
            l2=diff.norm(dim=1),
            objective=objective,
        )

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """Return (x_adv, queries). ``goal`` is y (untargeted) or the target labels; ``objective``
        gives per-sample values to maximise (already resolved for this model)."""
        raise NotImplementedError

    def is_success(self, logits: Tensor, y: Tensor, goal: Tensor) -> Tensor:
        pred = logits.argmax(dim=1)
        return pred == goal if self.targeted else pred != y

    def _check_budget(self, x: Tensor, x_adv: Tensor) -> None:
        if x_adv.shape != x.shape:
            raise AttackBudgetError(f"{self.name} changed the input shape {tuple(x.shape)} -> {tuple(x_adv.shape)}")
        if not torch.isfinite(x_adv).all():
            raise AttackBudgetError(f"{self.name} returned non-finite pixels")
        if float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
            raise AttackBudgetError(f"{self.name} left the [0, 1] image box")
        if self.norm is None or self.eps is None:
            return
        if self.norm == "linf":
            size = float((x_adv - x).abs().amax())
        else:
            size = float((x_adv - x).flatten(1).norm(dim=1).max())
        if size > self.eps + BUDGET_TOLERANCE:
            raise AttackBudgetError(f"{self.name} exceeded its {self.norm} budget: {size:.6g} > eps={self.eps:.6g}")


def warn_if_budget_unreachable(name: str, steps: int, step_size: float, eps: float) -> None:
    if steps * step_size < eps - 1e-12:
        warnings.warn(
            f"{name}: {steps} steps x step size {step_size:g} = {steps * step_size:g} < eps={eps:g}; "
            f"the attack cannot reach its budget and under-reports what eps={eps:g} allows",
            AttackBudgetWarning,
            stacklevel=3,
        )


class GradientFreeAttack(Attack):
    """An attack that only sees the model's outputs (SPSA, SimBA): ``query`` runs without autograd,
    so it cannot use a gradient even by accident."""

    def run(self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
            generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return self.query(model, x, y, goal, objective, generator)

    def query(self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError
