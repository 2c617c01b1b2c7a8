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

Attacks with ``per_sample_eps = True`` (the iterative family) also take ``eps=`` at call time: a
tensor of shape (N,) giving every sample its own budget, which replaces the constructed ``eps`` for
that call. Adversarial training uses it to draw eps ~ U[lo, hi] per example (PC paper, Table 5).
``attack.craft(...)`` returns the adversarial images alone, without the verdict pass: training
trains on them and needs no verdict. ``objective`` is a registered name or, for training's own
objectives (the phase's loss, TRADES' KL), a callable ``(logits, labels, targeted) -> (N,)``.

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
    # Whether a call may give each sample its own budget (``eps=`` a tensor of shape (N,)).
    per_sample_eps: ClassVar[bool] = False
    # Whether the examples depend on the model attacked. A transfer attack crafts on its substitute
    # and never queries the target, so the evaluation engine crafts its examples once for the whole
    # sampled set and submits the same images to every target (see evaluate/engine.py).
    queries_target: ClassVar[bool] = True

    def __init__(self, *, eps: float | None, targeted: bool = False, objective: str | Objective | None = "ce"):
        if eps is not None and not (eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"{self.name}: eps must be a finite number >= 0 (or None where unbounded), got {eps}")
        self.eps = None if eps is None else float(eps)
        self.targeted = bool(targeted)
        # A callable objective is used as given (training's loss or TRADES' KL); a name is looked up
        # per call, so "adaptive" resolves to whatever fits the model attacked. None: no objective.
        self.custom_objective: Objective | None = objective if callable(objective) else None
        if self.custom_objective is not None:
            objective = getattr(objective, "__name__", "custom")
        elif objective is not None:
            check_objective_name(objective)
        self.objective_name = objective

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
        eps: Tensor | None = None,
    ) -> AttackResult:
        x_adv, queries, objective = self._attack(model, x, y, target, generator, precision, eps)
        goal = target if self.targeted else y
        with kept_modes(model):
            model.eval()
            with torch.no_grad(), full_precision(x.device):  # the verdict: always float32
                pred = model(x_adv).argmax(dim=1)
        success = pred == goal if self.targeted else pred != y
        diff = (x_adv - x.detach()).flatten(1)
        return AttackResult(
            x_adv=x_adv,
            pred=pred,
            success=success,
            queries=queries,
            linf=diff.abs().amax(dim=1),
            l2=diff.norm(dim=1),
            objective=objective,
        )

    @final
    def craft(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        precision: str = "fp32",
        eps: Tensor | None = None,
    ) -> Tensor:
        """The adversarial images alone: the same attack as a call, without the verdict pass."""
        return self._attack(model, x, y, target, generator, precision, eps)[0]

    def _attack(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None,
                generator: torch.Generator | None, precision: str, eps: Tensor | None
                ) -> tuple[Tensor, Tensor, str]:
        """(x_adv within budget, queries, objective name) after checking the inputs."""
        check_precision(precision)
        if x.dim() != 4:
            raise ValueError(f"attacks take NCHW image batches, got shape {tuple(x.shape)}")
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError("attacks take images in [0, 1]; normalisation belongs inside the model")
        if self.targeted and target is None:
            raise ValueError(f"{self.name} was built with targeted=True: pass target=<labels>")
        budget = {} if eps is None else {"eps": self._checked_sample_eps(eps, len(x))}
        goal = target if self.targeted else y
        objective, name = self._objective_for(model)
        x = x.detach()
        with kept_modes(model):
            model.eval()
            with torch.enable_grad(), autocast_context(precision, x.device):
                x_adv, queries = self.run(model, x, y, goal, objective, generator, **budget)
        x_adv = x_adv.detach().to(x.dtype)  # a bf16 step must not leak into the returned images
        self._check_budget(x, x_adv, budget.get("eps"))
        return x_adv, queries, name

    def _objective_for(self, model: nn.Module) -> tuple[Objective | None, str]:
        if self.custom_objective is not None:
            return self.custom_objective, self.objective_name
        if not self.objective_name:
            return None, ""
        name = resolve_objective(self.objective_name, model)
        return get_objective(name), name

    def _checked_sample_eps(self, eps: Tensor, n: int) -> Tensor:
        if not self.per_sample_eps:
            raise ValueError(f"{self.name} takes one budget for the whole batch; per-sample eps is for the "
                             f"iterative attacks (fgsm, fgsm-rs, bim, pgd, mim, pgd-l2)")
        if not isinstance(eps, Tensor) or eps.shape != (n,):
            raise ValueError(f"{self.name}: per-sample eps must be a tensor of shape ({n},), "
                             f"got {tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__}")
        if not bool(torch.isfinite(eps).all()) or bool((eps < 0).any()):
            raise ValueError(f"{self.name}: per-sample eps must be finite and >= 0")
        return eps.detach()

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

    def _check_budget(self, x: Tensor, x_adv: Tensor, sample_eps: Tensor | None = None) -> None:
        if x_adv.shape != x.shape:
            raise AttackBudgetError(f"{self.name} changed the input shape {tuple(x.shape)} -> {tuple(x_adv.shape)}")
        if not torch.isfinite(x_adv).all():
            raise AttackBudgetError(f"{self.name} returned non-finite pixels")
        if float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
            raise AttackBudgetError(f"{self.name} left the [0, 1] image box")
        if self.norm is None or (self.eps is None and sample_eps is None):
            return
        diff = (x_adv - x).flatten(1)
        sizes = diff.abs().amax(dim=1) if self.norm == "linf" else diff.norm(dim=1)
        limit = torch.full_like(sizes, self.eps) if sample_eps is None else sample_eps.to(sizes)
        over = sizes - limit
        worst = int(over.argmax())
        if float(over[worst]) > BUDGET_TOLERANCE:
            raise AttackBudgetError(f"{self.name} exceeded its {self.norm} budget: {float(sizes[worst]):.6g} > "
                                    f"eps={float(limit[worst]):.6g}")


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
