"""Gradient-masking diagnostics (Athalye, Carlini & Wagner 2018; Carlini et al. 2019).

Each check reads the stored per-sample records of an ``Evaluation`` and says ``pass`` or
``warn`` with the numbers behind it (``n/a`` when the records it needs are missing).
``probe_plan`` lists the extra attacks that give every check its records; ``gradient_probe``
measures input gradients on clean samples (check 7) and stores them in ``evaluation.meta``.

1. iterative >= single-step     PGD/BIM/MIM/APGD are at least as strong as FGSM.
2. white-box >= black-box       no transfer/SPSA/SimBA attack breaks samples that every
                                white-box attack of the same norm and budget left standing.
3. monotone in eps              an attack's robust accuracy does not rise with eps.
4. huge eps breaks everything   at eps >= 1 (L-inf) accuracy is about 0.
5. steps converge               more steps or restarts do not raise robust accuracy, and the
                                reported setting is not far weaker than a longer run.
6. budget reachable             steps x step size >= eps.
7. gradients exist              input gradients are neither zero nor NaN on more than a few
                                percent of samples.
8. objectives agree             CE and the adaptive/margin objective give similar accuracy;
                                a large gap means the head defeats one of them (MMC with CE).
9. EOT on stochastic models     when the model is randomised (``meta["stochastic"]``, stored by
                                ``robustloss.evaluate.stochastic.record_stochasticity``), every
                                budget attacked by gradient attacks has one run with ``eot > 1``
                                (Athalye et al. 2018); otherwise the attacks follow the noise of
                                single draws and overstate robustness.

Tolerances: differences smaller than max(1 point, 2 binomial standard errors) are noise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from robustloss.attacks.objectives import get_objective, resolve_objective
from robustloss.data.split import ImageSplit
from robustloss.evaluate.plan import AttackSpec
from robustloss.evaluate.records import AttackRecord, Evaluation

SINGLE_STEP = {"fgsm"}
ITERATIVE = {"bim", "pgd", "mim", "apgd", "apgd-ce", "apgd-dlr", "pgd-l2"}
WHITE_BOX = ITERATIVE | SINGLE_STEP | {"cw", "deepfool"}
BLACK_BOX = {"transfer", "spsa", "simba"}
LARGE_EPS = {"linf": 1.0}
MASKED_GRADIENT_SHARE = 0.05  # more zero/NaN input gradients than this is suspicious


@dataclass
class Diagnostic:
    number: int
    check: str
    status: Literal["pass", "warn", "n/a"]
    detail: str
    numbers: dict = field(default_factory=dict)


def _tolerance(p: float, n: int) -> float:
    return max(0.01, 2 * math.sqrt(max(p * (1 - p), 1e-4) / max(n, 1)))


def _acc(ev: Evaluation, r: AttackRecord) -> float:
    return ev.accuracy(r)


def _at(ev: Evaluation, names: set[str], eps: float | None, norm: str | None) -> list[AttackRecord]:
    return [r for r in ev.records if r.attack in names and r.eps == eps and r.norm == norm]


def diagnose(ev: Evaluation) -> list[Diagnostic]:
    return [check(ev) for check in (_iterative_vs_single, _white_vs_black, _monotone, _huge_eps, _convergence,
                                     _budget, _gradients, _objectives, _eot_on_stochastic)]


def _iterative_vs_single(ev: Evaluation) -> Diagnostic:
    title, failures, compared = "iterative attacks at least as strong as FGSM", [], 0
    for fgsm in [r for r in ev.records if r.attack in SINGLE_STEP and r.eps is not None]:
        for other in _at(ev, ITERATIVE, fgsm.eps, fgsm.norm):
            compared += 1
            a, b = _acc(ev, other), _acc(ev, fgsm)
            if a > b + _tolerance(b, ev.n):
                failures.append(f"{other.name} {100 * a:.1f}% > FGSM {100 * b:.1f}% at eps={fgsm.eps:g}")
    if not compared:
        return Diagnostic(1, title, "n/a", "needs FGSM and an iterative attack at the same eps")
    return Diagnostic(1, title, "warn" if failures else "pass",
                      "; ".join(failures) or f"{compared} comparisons, none weaker than FGSM", {"failures": failures})


def _white_vs_black(ev: Evaluation) -> Diagnostic:
    title, findings, compared = "white-box at least as strong as black-box", [], 0
    for black in [r for r in ev.records if r.attack in BLACK_BOX and r.eps is not None]:
        whites = _at(ev, WHITE_BOX, black.eps, black.norm)
        if not whites:
            continue
        compared += 1
        white_broken = np.zeros(ev.n, dtype=bool)
        for w in whites:
            white_broken |= ev.fooled(w)
        only_black = ev.fooled(black) & ~white_broken
        share = only_black.mean()
        best_white = min(_acc(ev, w) for w in whites)
        if share > _tolerance(0.0, ev.n) or _acc(ev, black) < best_white - _tolerance(best_white, ev.n):
            findings.append(f"{black.name} at eps={black.eps:g}: {100 * _acc(ev, black):.1f}% vs best white-box "
                            f"{100 * best_white:.1f}%; {int(only_black.sum())} samples broken only by {black.name}")
    if not compared:
        return Diagnostic(2, title, "n/a", "needs a black-box attack (transfer/SPSA/SimBA) and a white-box one at "
                                           "the same eps")
    return Diagnostic(2, title, "warn" if findings else "pass", "; ".join(findings) or
                      f"{compared} black-box records; every sample they break is broken by a white-box attack too")


def _monotone(ev: Evaluation) -> Diagnostic:
    title, failures, series = "robust accuracy does not increase with eps", [], 0
    groups: dict[tuple, list[AttackRecord]] = {}
    for r in ev.records:
        if r.eps is not None:
            params = tuple(sorted((k, str(v)) for k, v in r.params.items() if k != "eps"))
            groups.setdefault((r.name, params), []).append(r)
    for (name, _), records in groups.items():
        records.sort(key=lambda r: r.eps)
        if len(records) > 1:
            series += 1
        for smaller, larger in zip(records, records[1:]):
            a, b = _acc(ev, larger), _acc(ev, smaller)
            if a > b + _tolerance(b, ev.n):
                failures.append(f"{name}: {100 * b:.1f}% at eps={smaller.eps:g} but {100 * a:.1f}% at "
                                f"eps={larger.eps:g}")
    if not series:
        return Diagnostic(3, title, "n/a", "needs an attack at two or more eps")
    return Diagnostic(3, title, "warn" if failures else "pass", "; ".join(failures) or f"{series} eps series")


def _huge_eps(ev: Evaluation) -> Diagnostic:
    title = "a very large eps drives accuracy to about 0"
    huge = [r for r in ev.records if r.norm in LARGE_EPS and r.eps is not None and r.eps >= LARGE_EPS[r.norm]
            and r.attack in WHITE_BOX]
    if not huge:
        return Diagnostic(4, title, "n/a", "needs a white-box L-inf attack at eps >= 1 (see probe_plan)")
    best = min(huge, key=lambda r: _acc(ev, r))
    acc = _acc(ev, best)
    status = "pass" if acc <= 0.02 else "warn"
    return Diagnostic(4, title, status, f"{best.name} at eps={best.eps:g}: {100 * acc:.1f}%"
                      + ("" if status == "pass" else " (an unbounded attack should reach ~0%: gradients are masked "
                                                     "or the attack is broken)"), {"accuracy": acc})


def _convergence(ev: Evaluation) -> Diagnostic:
    title, failures, compared = "more steps or restarts do not raise robust accuracy", [], 0
    by_key: dict[tuple, list[AttackRecord]] = {}
    for r in ev.records:
        if "steps" in r.params and r.eps is not None:
            key = (r.attack, r.eps, r.norm, r.objective, r.params.get("targeted"))
            by_key.setdefault(key, []).append(r)
    for records in by_key.values():
        effort = lambda r: int(r.params.get("steps", 1)) * int(r.params.get("restarts", 1))  # noqa: E731
        records.sort(key=effort)
        for weaker, stronger in zip(records, records[1:]):
            if effort(stronger) == effort(weaker):
                continue
            compared += 1
            a, b = _acc(ev, stronger), _acc(ev, weaker)
            tol = _tolerance(b, ev.n)
            if a > b + tol:
                failures.append(f"{stronger.name} with {effort(stronger)} steps x restarts is weaker "
                                f"({100 * a:.1f}%) than with {effort(weaker)} ({100 * b:.1f}%) at eps={weaker.eps:g}")
            elif a < b - 2 * tol:
                failures.append(f"{weaker.name} at eps={weaker.eps:g} is not converged: {100 * b:.1f}% with "
                                f"{effort(weaker)} steps x restarts, {100 * a:.1f}% with {effort(stronger)}")
    if not compared:
        return Diagnostic(5, title, "n/a", "needs the same attack with different steps or restarts (see probe_plan)")
    return Diagnostic(5, title, "warn" if failures else "pass", "; ".join(failures) or f"{compared} comparisons")


def _budget(ev: Evaluation) -> Diagnostic:
    title, failures, checked = "steps x step size reach eps", [], 0
    for r in ev.records:
        steps, step = r.params.get("steps"), r.params.get("step_size")
        if steps and step and r.eps is not None and r.norm == "linf":
            checked += 1
            if steps * step < r.eps - 1e-12:
                failures.append(f"{r.name} at eps={r.eps:g}: {steps} x {step:g} = {steps * step:g}")
    if not checked:
        return Diagnostic(6, title, "n/a", "no iterative L-inf attack in the records")
    return Diagnostic(6, title, "warn" if failures else "pass", "; ".join(failures) or f"{checked} records")


def _gradients(ev: Evaluation) -> Diagnostic:
    title = "input gradients are not zero or NaN"
    probe = ev.meta.get("gradient_probe")
    if not probe:
        return Diagnostic(7, title, "n/a", "run gradient_probe (robustloss eval --diagnostics does)")
    share = (probe["zero"] + probe["nonfinite"]) / max(probe["n"], 1)
    status = "warn" if share > MASKED_GRADIENT_SHARE else "pass"
    return Diagnostic(7, title, status, f"{probe['zero']} zero and {probe['nonfinite']} non-finite input gradients of "
                      f"the {probe['objective']} objective on {probe['n']} samples ({100 * share:.1f}%)", probe)


def _objectives(ev: Evaluation) -> Diagnostic:
    title, findings, compared = "CE and the adaptive/margin objective agree", [], 0
    same_setting = ("steps", "step_size", "targeted", "restarts")
    for ce in [r for r in ev.records if r.objective == "ce"]:
        seen: set[str] = set()
        for other in ev.records:
            same_attack = other.attack == ce.attack and other.eps == ce.eps and all(
                other.params.get(k) == ce.params.get(k) for k in same_setting)
            if same_attack and other.objective not in ("", "ce", *seen):
                seen.add(other.objective)
                compared += 1
                a, b = _acc(ev, ce), _acc(ev, other)
                if abs(a - b) > 2 * _tolerance(min(a, b), ev.n):
                    weaker = "CE" if a > b else other.objective
                    findings.append(f"{ce.name} eps={ce.eps}: CE {100 * a:.1f}% vs {other.objective} {100 * b:.1f}% "
                                    f"({weaker} is the weaker objective; report the stronger)")
    if not compared:
        return Diagnostic(8, title, "n/a", "needs one attack with the CE objective and with adaptive/cw (see probe_plan)")
    return Diagnostic(8, title, "warn" if findings else "pass", "; ".join(findings) or f"{compared} comparisons")


def _eot_capable() -> list[str]:
    """The registered attacks that take ``eot=`` (read from their signatures, so new ones show up)."""
    from robustloss.attacks import ATTACKS

    return [name for name in ATTACKS.names() if "eot" in ATTACKS.parameters(name)]


def _eot_on_stochastic(ev: Evaluation) -> Diagnostic:
    title = "gradient attacks use EOT on a stochastic model"
    stochastic = ev.meta.get("stochastic")
    if stochastic is None:
        return Diagnostic(9, title, "n/a", "unknown whether the model is stochastic (call "
                                           "robustloss.evaluate.stochastic.record_stochasticity)")
    gradient = [r for r in ev.records if r.attack in WHITE_BOX and r.eps is not None]
    if not stochastic:
        return Diagnostic(9, title, "pass", "the model is deterministic (two forward passes agree)")
    if not gradient:
        return Diagnostic(9, title, "n/a", "the model is stochastic but no gradient attack with a budget ran")
    budgets: dict[tuple, list[AttackRecord]] = {}
    for r in gradient:
        budgets.setdefault((r.norm, r.eps), []).append(r)
    missing = [f"{norm} eps={eps:g} ({', '.join(sorted({r.name for r in records}))})"
               for (norm, eps), records in sorted(budgets.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
               if not any(int(r.params.get("eot", 1)) > 1 for r in records)]
    redraw_note, numbers = _redraw_gap(ev, gradient)
    if missing:
        return Diagnostic(9, title, "warn", "the model is stochastic but no attack used EOT at " + "; ".join(missing)
                          + f": add eot=10 or more to one of {', '.join(_eot_capable())} (Athalye et al. "
                          "2018), or the robust accuracy is overstated" + redraw_note,
                          {"without_eot": missing} | numbers)
    return Diagnostic(9, title, "pass", f"{len(budgets)} budgets, each attacked with EOT" + redraw_note, numbers)


def _redraw_gap(ev: Evaluation, records: list[AttackRecord]) -> tuple[str, dict]:
    """The largest gap between an attack's one-draw accuracy and its mean over the engine's redraws:
    how much a table entry of this random model depends on the draw ('' when there were no redraws)."""
    gaps = []
    for r in records:
        spread = ev.accuracy_over_draws(r)
        if spread is not None:
            gaps.append((abs(ev.accuracy(r) - spread.mean), r, spread))
    if not gaps:
        return "", {}
    gap, record, spread = max(gaps, key=lambda g: g[0])
    return (f"; one draw vs the mean over {spread.draws} redraws differs by up to {100 * gap:.1f} points "
            f"({record.name} eps={record.eps:g}: {100 * ev.accuracy(record):.1f}% vs {100 * spread.mean:.1f}% "
            f"± {100 * spread.std:.1f})", {"max_redraw_gap": gap})


def probe_plan(plan: list[AttackSpec], *, huge_eps: float = 1.0, step_factor: int = 5) -> list[AttackSpec]:
    """Extra attacks that give every check its records, derived from an existing plan."""
    # Only L-inf budgets: an L2 radius (pgd-l2) is on another scale and would make a meaningless probe.
    linf_eps = sorted({e for s in plan for e in s.eps
                       if e is not None and s.resolved()[0] in ITERATIVE | SINGLE_STEP and _norm_of(s, e) == "linf"})
    top = linf_eps[-1] if linf_eps else 0.3
    extra = [
        AttackSpec("pgd", [huge_eps], {"steps": 20, "step_size": huge_eps / 8, "objective": "adaptive"},
                   label="diag-pgd-huge"),
        AttackSpec("pgd", [top], {"steps": 40, "step_size": 2.5 * top / 40, "objective": "ce"}, label="diag-pgd-ce"),
        AttackSpec("pgd", [top], {"steps": 40, "step_size": 2.5 * top / 40, "objective": "cw"},
                   label="diag-pgd-margin"),
        AttackSpec("pgd", [top], {"steps": 40, "step_size": 2.5 * top / 40, "objective": "adaptive"},
                   label="diag-pgd-adaptive"),
        AttackSpec("pgd", [top], {"steps": 40 * step_factor, "step_size": 2.5 * top / (40 * step_factor),
                                  "objective": "adaptive"}, label="diag-pgd-long"),
    ]
    if not any(s.resolved()[0] == "fgsm" for s in plan):
        extra.append(AttackSpec("fgsm", [top], {"objective": "adaptive"}, label="diag-fgsm"))
    # A plan that attacks a random model with EOT gets probes with the same EOT: the checks compare
    # probes with each other and with the plan, and a probe without it would be weak for another reason.
    eot = max((int(s.resolved()[1].get("eot", 1)) for s in plan), default=1)
    if eot > 1:
        extra = [replace(spec, params={**spec.params, "eot": eot}) for spec in extra]
    return extra


def _norm_of(spec: AttackSpec, eps: float) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spec.build(eps).norm


@torch.no_grad()
def _finite(t: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(t.flatten(1)).all(dim=1)


def gradient_probe(model: torch.nn.Module, split: ImageSplit, *, objective: str = "adaptive", n: int = 500,
                   device: str | torch.device = "cpu") -> dict:
    """Count samples whose input gradient of the attack objective is all-zero or non-finite."""
    model = model.to(device).eval()
    name = resolve_objective(objective, model)
    fn = get_objective(name)
    x, y = split.batch(slice(0, min(n, len(split))))
    x, y = x.to(device).requires_grad_(True), y.to(device)
    gain = fn(model(x), y, False)
    (grad,) = torch.autograd.grad(gain.sum(), x)
    finite = _finite(grad)
    zero = finite & (grad.flatten(1).abs().amax(dim=1) == 0)
    return {"objective": name, "n": len(y), "zero": int(zero.sum()), "nonfinite": int((~finite).sum())}


def format_diagnostics(diagnostics: list[Diagnostic]) -> str:
    lines = ["| # | check | status | details |", "|---|---|---|---|"]
    for d in diagnostics:
        mark = {"pass": "pass", "warn": "**WARN**", "n/a": "n/a"}[d.status]
        lines.append(f"| {d.number} | {d.check} | {mark} | {d.detail} |")
    return "\n".join(lines) + "\n"
