"""Gradient-masking diagnostics (Athalye, Carlini & Wagner 2018; Carlini et al. 2019).

Each check reads the stored per-sample records of an ``Evaluation`` and says ``pass`` or
``warn`` with the numbers behind it (``n/a`` when the records it needs are missing).
``probe_plan`` lists the extra attacks that give every check its records; ``gradient_probe``
measures input gradients on clean samples (check 7) and callers store its result in
``evaluation.meta["gradient_probe"]``.

1. iterative >= single-step     PGD/BIM/MIM/APGD are at least as strong as FGSM.
2. white-box >= black-box       no transfer/SPSA/SimBA/Square attack breaks samples that every
                                white-box attack of the same norm and budget left standing: such
                                samples are the signature of masked gradients.
3. monotone in eps              an attack's robust accuracy does not rise with eps (a series is one
                                attack with the same settings, its step size either fixed or a fixed
                                multiple of eps).
4. huge eps breaks everything   at eps >= 1 (L-inf) accuracy is about 0.
5. steps converge               more steps or restarts do not raise robust accuracy, and the
                                reported setting is not far weaker than a longer run.
6. budget reachable             steps x step size >= eps.
7. gradients exist              for every objective the plan's gradient attacks use
                                (``plan_objectives``), input gradients are neither zero nor NaN on
                                more than MASKED_GRADIENT_SHARE of the probed samples.
8. objectives agree             the same attack with CE and with another objective (adaptive,
                                margin), compared per sample: b = samples broken by the other
                                objective only, c = by CE only, among samples both attacked. Under
                                "the objectives are equally strong" b ~ Binomial(b + c, 1/2); the
                                exact two-sided sign (McNemar) test gives
                                    p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)).
                                It warns when p < OBJECTIVE_ALPHA and |b - c| is at least
                                OBJECTIVE_MIN_GAP of the evaluated samples (a difference too small
                                to move a reported accuracy by a point is not worth a warning), and
                                names the stronger objective (MMC attacked with CE is the classic).
9. EOT on stochastic models     when the model is randomised (``meta["stochastic"]``, stored by
                                ``robustloss.evaluate.stochastic.record_stochasticity``), every
                                budget attacked by gradient attacks has one run with ``eot > 1``
                                (Athalye et al. 2018); otherwise the attacks follow the noise of
                                single draws and overstate robustness.

Tolerances of checks 1-5: differences smaller than max(1 point, 2 binomial standard errors) are noise.

The probe attacks that give these checks their records, and the gradient probe of check 7, are in
``robustloss.evaluate.probes``.

Stored format of ``meta["gradient_probe"]``: ``{"n": N, "objectives": [{"objective": name, "zero": int,
"nonfinite": int}, ...]}``. Stores written by earlier versions hold ``{"objective", "n", "zero",
"nonfinite"}`` (one objective); check 7 reads both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import numpy as np

from robustloss.evaluate.probes import BLACK_BOX
from robustloss.evaluate.records import AttackRecord, Evaluation

SINGLE_STEP = {"fgsm"}
ITERATIVE = {"bim", "pgd", "mim", "apgd", "apgd-ce", "apgd-dlr", "apgd-t", "pgd-l2"}
WHITE_BOX = ITERATIVE | SINGLE_STEP | {"cw", "deepfool", "fab", "fab-t"}
LARGE_EPS = {"linf": 1.0}
MASKED_GRADIENT_SHARE = 0.05  # more zero/NaN input gradients than this is suspicious
OBJECTIVE_ALPHA = 0.01  # check 8: significance level of the paired sign test
OBJECTIVE_MIN_GAP = 0.01  # check 8: |b - c| must also reach this share of the evaluated samples


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
        return Diagnostic(2, title, "n/a", "needs a black-box attack (transfer/SPSA/SimBA/Square) and a white-box "
                                           "one at the same eps")
    if findings:
        # A gradient-free attack cannot outdo the gradient ones on a model whose gradients are honest.
        return Diagnostic(2, title, "warn", "; ".join(findings) + ". Samples that a black-box attack breaks but "
                          "no white-box attack of the same budget does are the signature of masked gradients "
                          "(e.g. a non-differentiable input transform or a saturated softmax): the white-box "
                          "accuracies are upper bounds", {"findings": findings})
    return Diagnostic(2, title, "pass",
                      f"{compared} black-box records; every sample they break is broken by a white-box attack too")


def _monotone(ev: Evaluation) -> Diagnostic:
    title, failures, series = "robust accuracy does not increase with eps", [], 0
    groups: dict[tuple, list[AttackRecord]] = {}
    for r in ev.records:
        if r.eps is not None:
            for key in _series_keys(r):
                groups.setdefault(key, []).append(r)
    for records in groups.values():
        records.sort(key=lambda r: r.eps)
        if len({r.eps for r in records}) > 1:
            series += 1
        for smaller, larger in pairwise(records):
            a, b = _acc(ev, larger), _acc(ev, smaller)
            if larger.eps > smaller.eps and a > b + _tolerance(b, ev.n):
                failures.append(f"{larger.name}: {100 * b:.1f}% at eps={smaller.eps:g} but {100 * a:.1f}% at "
                                f"eps={larger.eps:g}")
    failures = list(dict.fromkeys(failures))  # a record can sit in two series
    if not series:
        return Diagnostic(3, title, "n/a", "needs an attack at two or more eps")
    return Diagnostic(3, title, "warn" if failures else "pass", "; ".join(failures) or f"{series} eps series")


def _series_keys(r: AttackRecord) -> list[tuple]:
    """The eps series a record belongs to: same name and settings, with the step size either the same
    (a fixed step, as in the papers' tables) or the same multiple of eps (the probes' 2.5 * eps / steps)."""
    params = tuple(sorted((k, str(v)) for k, v in r.params.items() if k not in ("eps", "step_size")))
    step = r.params.get("step_size")
    if step is None:
        return [(r.name, params)]
    keys = [(r.name, params, "step_size", str(step))]
    if r.eps:
        keys.append((r.name, params, "step_size/eps", f"{float(step) / r.eps:.6g}"))
    return keys


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
        effort = lambda r: int(r.params.get("steps", 1)) * int(r.params.get("restarts", 1))
        records.sort(key=effort)
        for weaker, stronger in pairwise(records):
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
    probe = _probe_entries(ev.meta.get("gradient_probe"))
    if probe is None:
        return Diagnostic(7, title, "n/a", "run gradient_probe (robustloss eval --diagnostics does)")
    n, entries = probe
    if not entries:
        return Diagnostic(7, title, "n/a", "the plan has no gradient attack whose objective could be probed")
    parts, masked = [], []
    for entry in entries:
        share = (entry["zero"] + entry["nonfinite"]) / max(n, 1)
        parts.append(f"{entry['objective']}: {entry['zero']} zero and {entry['nonfinite']} non-finite input "
                     f"gradients on {n} samples ({100 * share:.1f}%)")
        if share > MASKED_GRADIENT_SHARE:
            masked.append(entry["objective"])
    detail = "; ".join(parts)
    if masked:
        detail += (f". Attacks using {' / '.join(masked)} see no gradient on those samples, so their robust "
                   "accuracies are upper bounds: attack with an objective whose gradients exist (e.g. cw or "
                   "adaptive)")
    return Diagnostic(7, title, "warn" if masked else "pass", detail, {"n": n, "objectives": entries,
                                                                      "masked": masked})


def _probe_entries(probe: dict | None) -> tuple[int, list[dict]] | None:
    """(n, [{"objective", "zero", "nonfinite"}, ...]) from either stored format (see the module docstring)."""
    if not probe:
        return None
    if "objectives" in probe:
        return int(probe["n"]), [dict(e) for e in probe["objectives"]]
    # written before several objectives were probed: one objective at the top level
    return int(probe["n"]), [{"objective": probe["objective"], "zero": probe["zero"],
                              "nonfinite": probe["nonfinite"]}]


def sign_test(b: int, c: int) -> float:
    """Exact two-sided sign (McNemar) test: the p-value of b against c discordant pairs when each pair
    is equally likely to fall either way. Exact integer arithmetic, so it is right for any b + c."""
    n = b + c
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); each next term C(n, k + 1) = C(n, k) * (n - k) / (k + 1), exactly
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def _objectives(ev: Evaluation) -> Diagnostic:
    title, findings, compared = "CE and the adaptive/margin objective agree (paired sign test)", [], []
    for ce, other in _objective_pairs(ev):
        pair = _paired(ev, ce, other)
        compared.append(pair)
        b, c = pair["other_only"], pair["ce_only"]
        if pair["p"] < OBJECTIVE_ALPHA and abs(b - c) >= OBJECTIVE_MIN_GAP * ev.n:
            stronger, weaker = (other.objective, "CE") if b > c else ("CE", other.objective)
            findings.append(_describe_pair(pair) + f": {weaker} is the weaker objective; report {stronger}")
    if not compared:
        return Diagnostic(8, title, "n/a", "needs one attack with the CE objective and with adaptive/cw "
                                           "(see probe_plan)")
    if findings:
        return Diagnostic(8, title, "warn", "; ".join(findings), {"comparisons": compared})
    closest = min(compared, key=lambda pair: pair["p"])
    return Diagnostic(8, title, "pass", f"{len(compared)} paired comparisons, no objective significantly stronger "
                      f"(p < {OBJECTIVE_ALPHA:g} and a gap of {100 * OBJECTIVE_MIN_GAP:g}% of samples); closest: "
                      + _describe_pair(closest), {"comparisons": compared})


def _objective_pairs(ev: Evaluation) -> Iterator[tuple[AttackRecord, AttackRecord]]:
    """(CE record, record of another objective) run with the same attack, eps and settings; one pair
    per other objective (an ``adaptive`` probe resolved to ``cw`` repeats the margin probe)."""
    same_setting = ("steps", "step_size", "targeted", "restarts")
    for ce in [r for r in ev.records if r.objective == "ce"]:
        seen: set[str] = set()
        for other in ev.records:
            same_attack = other.attack == ce.attack and other.eps == ce.eps and other.norm == ce.norm and all(
                other.params.get(k) == ce.params.get(k) for k in same_setting)
            if same_attack and other.objective not in ("", "ce", *seen):
                seen.add(other.objective)
                yield ce, other


def _paired(ev: Evaluation, ce: AttackRecord, other: AttackRecord) -> dict:
    """Both accuracies and the discordant counts among the samples both records attacked (in
    worst-case mode a record skips samples an earlier attack broke: those are no evidence either way)."""
    both = ce.attacked & other.attacked
    by_ce, by_other = ev.fooled(ce) & both, ev.fooled(other) & both
    b, c = int((by_other & ~by_ce).sum()), int((by_ce & ~by_other).sum())
    return {"attack": ce.name, "other": other.name, "eps": ce.eps, "objective": other.objective,
            "ce_accuracy": _acc(ev, ce), "other_accuracy": _acc(ev, other), "paired": int(both.sum()),
            "other_only": b, "ce_only": c, "p": sign_test(b, c)}


def _describe_pair(pair: dict) -> str:
    eps = "-" if pair["eps"] is None else f"{pair['eps']:g}"
    return (f"{pair['attack']} eps={eps}: CE {100 * pair['ce_accuracy']:.1f}% vs {pair['objective']} "
            f"{100 * pair['other_accuracy']:.1f}%; of {pair['paired']} samples attacked by both, "
            f"b = {pair['other_only']} broken by {pair['objective']} only, c = {pair['ce_only']} by CE only "
            f"(exact sign test p = {pair['p']:.2g})")


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
    note = (f"; one draw vs the mean over {spread.draws} redraws differs by up to {100 * gap:.1f} points "
            f"({record.name} eps={record.eps:g}: {100 * ev.accuracy(record):.1f}% vs {100 * spread.mean:.1f}% "
            f"± {100 * spread.std:.1f})")
    return note, {"max_redraw_gap": gap}


def format_diagnostics(diagnostics: list[Diagnostic]) -> str:
    lines = ["| # | check | status | details |", "|---|---|---|---|"]
    for d in diagnostics:
        mark = {"pass": "pass", "warn": "**WARN**", "n/a": "n/a"}[d.status]
        lines.append(f"| {d.number} | {d.check} | {mark} | {d.detail} |")
    return "\n".join(lines) + "\n"
