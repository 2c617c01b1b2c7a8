"""The probe attacks the diagnostics need, and the gradient probe of check 7.

Probes (``probe_plan``; labels start with ``diag-``): PGD with CE, the C&W margin and the adaptive
objective, 40 steps of 2.5 * eps / 40 (Madry et al. 2018's step rule), at EVERY L-inf budget of the
plan, so that the worst case at each budget includes the strongest objective (one spec per budget,
because an ``AttackSpec`` has one step size for all its budgets; records are keyed by (label, eps)).
When the plan has L2 budgets, ``pgd-l2`` gets the same three probes at each of them (its default step
is already 2.5 * eps / steps). The huge-eps probe, the long run (check 5) and FGSM (check 1) run at the
largest L-inf budget only.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch

from robustloss.attacks.objectives import get_objective, resolve_objective
from robustloss.attacks.step_rule import default_step_size
from robustloss.data.split import ImageSplit
from robustloss.evaluate.config import AttackSpec
from robustloss.models.modes import kept_modes

BLACK_BOX = {"transfer", "spsa", "simba", "square"}  # gradient-free or gradients of another model
PROBE_PREFIX = "diag-"  # labels of the probe attacks (the report leaves them out of its tables)
PROBE_STEPS = 40  # PGD steps of the objective probes (Madry et al. 2018, MNIST)
DEFAULT_LINF_EPS = 0.3  # probe budget of a plan without L-inf budgets (the MNIST standard)
OBJECTIVE_PROBES = (("ce", "ce"), ("margin", "cw"), ("adaptive", "adaptive"))  # label suffix, objective


def probe_plan(plan: list[AttackSpec], *, huge_eps: float = 1.0, step_factor: int = 5) -> list[AttackSpec]:
    """Extra attacks that give every check its records, derived from an existing plan (see the module
    docstring: objective probes at every L-inf and L2 budget, the other probes at the largest L-inf one)."""
    # An L2 radius is on another scale than an L-inf one: each norm's probes use that norm's budgets only.
    linf_eps = _budgets(plan, "linf") or [DEFAULT_LINF_EPS]
    l2_eps = _budgets(plan, "l2")
    top = linf_eps[-1]
    extra = [AttackSpec("pgd", [huge_eps], {"steps": 20, "step_size": huge_eps / 8, "objective": "adaptive"},
                        label=f"{PROBE_PREFIX}pgd-huge")]
    # one spec per budget: an AttackSpec has one step size for all its eps, and this one scales with eps
    extra += [AttackSpec("pgd", [eps], {"steps": PROBE_STEPS, "step_size": default_step_size(eps, PROBE_STEPS),
                                        "objective": objective}, label=f"{PROBE_PREFIX}pgd-{suffix}")
              for suffix, objective in OBJECTIVE_PROBES for eps in linf_eps]
    long_steps = PROBE_STEPS * step_factor
    extra.append(AttackSpec("pgd", [top], {"steps": long_steps, "step_size": default_step_size(top, long_steps),
                                           "objective": "adaptive"}, label=f"{PROBE_PREFIX}pgd-long"))
    if l2_eps:  # pgd-l2's default step is 2.5 * eps / steps already, so one spec covers every budget
        extra += [AttackSpec("pgd-l2", l2_eps, {"steps": PROBE_STEPS, "objective": objective},
                             label=f"{PROBE_PREFIX}pgd-l2-{suffix}") for suffix, objective in OBJECTIVE_PROBES]
    if not any(s.resolved()[0] == "fgsm" for s in plan):
        extra.append(AttackSpec("fgsm", [top], {"objective": "adaptive"}, label=f"{PROBE_PREFIX}fgsm"))
    # A plan that attacks a random model with EOT gets probes with the same EOT: the checks compare
    # probes with each other and with the plan, and a probe without it would be weak for another reason.
    eot = max((int(s.resolved()[1].get("eot", 1)) for s in plan), default=1)
    if eot > 1:
        extra = [replace(spec, params={**spec.params, "eot": eot}) for spec in extra]
    return extra


def _budgets(plan: list[AttackSpec], norm: str) -> list[float]:
    """The plan's budgets of ``norm`` (probes already in the plan excluded), ascending."""
    return sorted({e for s in plan if not s.name.startswith(PROBE_PREFIX) for e in s.eps
                   if e is not None and _built(s, e).norm == norm})


def _built(spec: AttackSpec, eps: float | None):
    """The spec's attack at ``eps``, quietly: the engine reports budget warnings when it runs it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spec.build(eps)


def plan_objectives(plan: list[AttackSpec], model: torch.nn.Module) -> list[str]:
    """The concrete objectives (``adaptive`` resolved for ``model``) that the plan's gradient attacks
    follow, deduplicated, in plan order: what ``gradient_probe`` should probe. Black-box attacks (their
    gradients are estimated or come from another model), attacks without an objective (noise, rotation)
    and the diagnostic probes are left out; C&W and DeepFool count, with the margin they differentiate."""
    found: list[str] = []
    for spec in plan:
        if spec.name.startswith(PROBE_PREFIX) or spec.resolved()[0] in BLACK_BOX or not spec.eps:
            continue
        objective = _built(spec, spec.eps[0]).objective_name
        if objective:
            found.append(resolve_objective(objective, model))
    return list(dict.fromkeys(found))


@torch.no_grad()
def _finite(t: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(t.flatten(1)).all(dim=1)


def gradient_probe(model: torch.nn.Module, split: ImageSplit, *, objectives: list[str] | str = "adaptive",
                   n: int = 500, device: str | torch.device = "cpu") -> dict:
    """Per objective (``adaptive`` resolved for ``model``), count the first ``n`` samples whose input
    gradient is all-zero or non-finite: ``{"n": N, "objectives": [{"objective", "zero", "nonfinite"}]}``.
    Pass ``objectives=plan_objectives(plan, model)`` so that check 7 probes what the attacks followed."""
    names = [objectives] if isinstance(objectives, str) else list(objectives)
    resolved = list(dict.fromkeys(resolve_objective(name, model) for name in names))
    x, y = split.batch(slice(0, min(n, len(split))))
    entries: list[dict] = []
    if resolved:
        with kept_modes(model):
            model = model.to(device).eval()
            x, y = x.to(device).requires_grad_(True), y.to(device)
            with torch.enable_grad():
                logits = model(x)  # one forward pass; each objective differentiates the same graph
                for i, name in enumerate(resolved):
                    gain = get_objective(name)(logits, y, False)
                    (grad,) = torch.autograd.grad(gain.sum(), x, retain_graph=i < len(resolved) - 1)
                    finite = _finite(grad)
                    zero = finite & (grad.flatten(1).abs().amax(dim=1) == 0)
                    entries.append({"objective": name, "zero": int(zero.sum()), "nonfinite": int((~finite).sum())})
    return {"n": len(y), "objectives": entries}
