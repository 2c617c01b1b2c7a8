"""``standard_evaluation``: the strongest honest robust accuracy of any model, in one call.

    >>> report = standard_evaluation(model, x, y, norm="linf", eps=8/255)
    >>> report.verdict   # the number, the attack that set it, every warning

The ensemble is AutoAttack's (Croce & Hein, ICML 2020): four complementary attacks run in a fixed order,
each on the samples that every earlier one left standing (the engine's ``worst-case`` mode, AutoAttack's
robust mask), so the final number is the per-sample worst case over all of them:

* ``standard``: APGD-CE; APGD-T (targeted DLR over the top 9 classes); FAB-T (minimum-norm, top 9
  classes); Square (5,000 queries, gradient-free, so a non-differentiable or gradient-masking model
  still meets an attack that does not need its gradient);
* ``plus``: APGD-CE and APGD-DLR with 5 restarts, FAB with 5 restarts, Square with 5 restarts, then
  APGD-T and FAB-T (AutoAttack's "plus" version);
* ``rand``: APGD-CE and APGD-DLR with EOT over 20 passes, for randomised models (chosen by itself when
  the model's outputs are found to be stochastic);
* ``custom``: the attacks you name.

A model trained by robustloss with a loss whose head defeats cross-entropy (MMC's centers: its
``adaptive`` objective is the distance to the centers; LGM, ArcFace: the logit margin) also gets APGD
with that objective, right after APGD-CE.

Beyond AutoAttack, the result holds the per-sample records of every attack (the ``Evaluation`` every
table, plot, diagnostic and the results store read), the pre-attack sanity checks
(``robustloss.evaluate.sanity``) and the gradient-masking diagnostics, which bring their own probe
attacks (PGD with the CE, margin and adaptive objectives at every budget, a huge-eps run and a long run):
they join the worst case too. ``verdict`` is a paste-able summary.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustloss.attacks.objectives import resolve_objective
from robustloss.evaluate.config import AttackSpec, EvaluateConfig
from robustloss.evaluate.diagnostics import Diagnostic
from robustloss.evaluate.records import Evaluation
from robustloss.evaluate.run import as_split, diagnostics_of, run_evaluation
from robustloss.evaluate.sanity import SanityCheck
from robustloss.evaluate.stochastic import is_stochastic
from robustloss.evaluate.worst_case import broken_within
from robustloss.models.modes import kept_modes

_log = logging.getLogger(__name__)
VERSIONS = ("standard", "plus", "rand", "custom")
NORMS = ("linf", "l2")
TARGET_CLASSES = 9  # AutoAttack's standard version: APGD-T and FAB-T over the top 9 wrong classes
SQUARE_QUERIES = 5000  # AutoAttack's standard version
RAND_EOT = 20  # AutoAttack's rand version: 20 passes per gradient
PLUS_RESTARTS = 5  # AutoAttack's plus version


def standard_plan(norm: str, eps: float | Sequence[float], version: str = "standard", *, num_classes: int = 10,
                  adaptive_objective: str | None = None, attacks: Sequence[str] = ()) -> list[AttackSpec]:
    """The ensemble of ``version`` as a plan, in the order it runs. ``adaptive_objective``: the objective
    that fits the model's head, when it is not cross-entropy (APGD with it joins after APGD-CE)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
    budgets = _budgets(eps)
    targets = max(1, min(TARGET_CLASSES, num_classes - 1))

    def spec(attack: str, label: str = "", **params: Any) -> AttackSpec:
        return AttackSpec(attack, list(budgets), {"norm": norm} | params, label=label)

    if version == "custom":
        if not attacks:
            raise ValueError("version='custom' needs attacks=[...] (registered attack or preset names)")
        return [AttackSpec(name, list(budgets), {}) for name in attacks]
    if attacks:
        raise ValueError(f"attacks=[...] is for version='custom', not {version!r}")
    if version == "rand":
        return [spec("apgd-ce", eot=RAND_EOT), spec("apgd-dlr", eot=RAND_EOT)]
    adaptive = ([spec("apgd", f"apgd-{adaptive_objective}", objective=adaptive_objective)]
                if adaptive_objective not in (None, "ce", "dlr") else [])
    if version == "plus":
        return [spec("apgd-ce", restarts=PLUS_RESTARTS), *adaptive, spec("apgd-dlr", restarts=PLUS_RESTARTS),
                spec("fab", restarts=PLUS_RESTARTS), spec("square", n_queries=SQUARE_QUERIES, restarts=PLUS_RESTARTS),
                spec("apgd-t", n_target_classes=targets), spec("fab-t", n_target_classes=targets)]
    return [spec("apgd-ce"), *adaptive, spec("apgd-t", n_target_classes=targets),
            spec("fab-t", n_target_classes=targets), spec("square", n_queries=SQUARE_QUERIES)]


def _budgets(eps: float | Sequence[float] | None) -> list[float]:
    values = [eps] if isinstance(eps, (int, float)) else list(eps or [])
    if not values:
        raise ValueError("give the budget: eps=8/255 (L-inf, CIFAR), 0.3 (L-inf, MNIST), 0.5 (L2, CIFAR), ...")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
            raise ValueError(f"eps must be positive numbers, got {value!r}")
    return sorted(float(v) for v in values)


@dataclass
class StandardReport:
    """What ``standard_evaluation`` found. ``robust_accuracy`` is at the largest budget; ``curve`` gives
    every budget. ``per_attack`` has one row per attack, in run order, at the largest budget, and follows
    the robust mask: ``robust_after`` is the worst case after that attack and all before it (not the
    attack's own accuracy), ``newly_broken`` the samples it was the first to break (at any budget up to
    the largest), ``attacked`` the most samples it was given at one budget, ``seconds`` and ``queries``
    its totals over the budgets. ``per_sample`` holds arrays over the evaluated samples."""

    evaluation: Evaluation
    norm: str
    eps: list[float]
    version: str
    clean_accuracy: float
    robust_accuracy: float
    interval: tuple[float, float]  # 95% Wilson interval of robust_accuracy over the samples
    curve: list[tuple[float, float]]
    per_attack: list[dict]
    per_sample: dict[str, np.ndarray]
    sanity: list[SanityCheck] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole call

    @property
    def n(self) -> int:
        return self.evaluation.n

    @property
    def verdict(self) -> str:
        return _verdict(self)


def standard_evaluation(
    model: nn.Module,
    x: Any,
    y: Tensor | None = None,
    *,
    norm: Literal["linf", "l2"] = "linf",
    eps: float | Sequence[float] | None = None,
    version: str | None = None,
    attacks: Sequence[str] = (),
    overrides: dict[str, dict[str, Any]] | None = None,
    diagnostics: bool = True,
    n_test: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    cache_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = _log.info,
) -> StandardReport:
    """Run the standard ensemble on ``model`` (any ``nn.Module`` mapping [0, 1] images to logits) over
    ``x`` (images with labels ``y``, an ``(x, y)`` pair, an ``ImageSplit`` or a ``DataLoader``).

    ``version=None`` picks ``rand`` for a stochastic model and ``standard`` otherwise. ``overrides``
    change an attack's parameters by name, e.g. ``{"square": {"n_queries": 1000}}``."""
    split = as_split(x, y)
    if n_test is not None:
        split = split.subset(slice(0, n_test))
    sample = split.batch(slice(0, min(32, len(split))))[0]
    device_model = next(iter(model.parameters()), torch.empty(0)).device
    if version is None:
        version = "rand" if len(split) and is_stochastic(model, sample.to(device_model)) else "standard"
        if version == "rand":
            log("the model's outputs are stochastic: running the rand version (APGD-CE and APGD-DLR with EOT)")
    num_classes = _num_classes(model, sample.to(device_model), split.labels)
    adaptive = resolve_objective("adaptive", model) if getattr(model, "trained_with", None) else None
    plan = standard_plan(norm, eps, version, num_classes=num_classes, adaptive_objective=adaptive, attacks=attacks)
    config = EvaluateConfig(attacks=plan, batch_size=batch_size, mode="worst-case", diagnostics=diagnostics,
                            seed=seed, overrides=dict(overrides or {}), objective=None)  # the plan sets each one
    started = time.perf_counter()
    evaluation = run_evaluation(model, split, config, device=device, cache_dir=cache_dir, progress=progress,
                                log=log, meta={"standard": version, "norm": norm})
    return replace(report_from_evaluation(evaluation, norm, eps, version), seconds=time.perf_counter() - started)


def _num_classes(model: nn.Module, sample: Tensor, labels: Tensor) -> int:
    declared = getattr(model, "num_classes", None)
    if declared:
        return int(declared)
    with kept_modes(model), torch.no_grad():
        model.eval()
        return int(model(sample[:2]).shape[1])


def report_from_evaluation(evaluation: Evaluation, norm: str, eps: float | Sequence[float], version: str
                           ) -> StandardReport:
    """The report of a finished standard evaluation (also for records read back from disk or the store)."""
    budgets = _budgets(eps)
    top = budgets[-1]
    curve = [(e, float((evaluation.clean_correct & ~broken_within(evaluation, norm, e)).mean())) for e in budgets]
    robust = curve[-1][1]
    per_attack, broken_by, distance = _per_attack(evaluation, norm, top)
    per_sample = {"index": evaluation.index, "label": evaluation.labels, "clean_pred": evaluation.clean_pred,
                  "robust": evaluation.clean_correct & ~broken_within(evaluation, norm, top),
                  "broken_by": broken_by, "distance": distance}
    checks = [SanityCheck(**c) for c in evaluation.meta.get("sanity", [])]
    return StandardReport(evaluation=evaluation, norm=norm, eps=budgets, version=version,
                          clean_accuracy=evaluation.clean_accuracy, robust_accuracy=robust,
                          interval=wilson_interval(robust, evaluation.n), curve=curve, per_attack=per_attack,
                          per_sample=per_sample, sanity=checks, diagnostics=diagnostics_of(evaluation))


def _per_attack(evaluation: Evaluation, norm: str, top: float) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """One row per attack, in run order, for the largest budget, with each sample's first breaker and
    smallest distance. An attack's row gathers its records at every budget up to ``top``: in worst-case
    mode a sample broken at a smaller eps is not attacked again at a larger one, yet it is broken there."""
    broken = ~evaluation.clean_correct
    broken_by = np.where(broken, "clean", "").astype(object)
    distance = np.full(evaluation.n, np.inf)
    distance[broken] = 0.0
    rows: dict[str, dict] = {}
    within: dict[str, np.ndarray] = {}
    for record in evaluation.records:
        if record.norm != norm:
            continue
        fooled = evaluation.fooled(record)
        size = record.distance(norm)
        distance[fooled] = np.minimum(distance[fooled], size[fooled])
        if record.eps is not None and record.eps > top + 1e-12:
            continue
        row = rows.setdefault(record.name, {"attack": record.name, "eps": top, "attacked": 0, "seconds": 0.0,
                                            "queries": 0})
        row["attacked"] = max(row["attacked"], int(record.attacked.sum()))
        row["seconds"] += record.seconds
        row["queries"] += int(record.queries[record.attacked].sum())
        within[record.name] = within.get(record.name, np.zeros(evaluation.n, bool)) | (fooled & (size <= top + 1e-6))
    for name, row in rows.items():
        new = within[name] & ~broken
        broken_by[new] = name
        broken |= within[name]
        row.update(newly_broken=int(new.sum()), robust_after=float((~broken).mean()))
    return list(rows.values()), broken_by.astype(str), distance


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion p observed on n samples (95% for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _verdict(report: StandardReport) -> str:
    low, high = report.interval
    budget = "L-inf" if report.norm == "linf" else "L2"
    eps = f"{report.eps[-1]:.4g}"
    lines = [f"Robust accuracy {100 * report.robust_accuracy:.1f}% (95% CI {100 * low:.1f}-{100 * high:.1f}%, "
             f"n = {report.n}) at {budget} eps = {eps}; clean accuracy {100 * report.clean_accuracy:.1f}%; "
             f"robustloss standard evaluation, version {report.version}."]
    breakers = sorted((row for row in report.per_attack if row["newly_broken"]), key=lambda r: -r["newly_broken"])
    if breakers:
        lines.append("Set by: " + ", ".join(f"{row['attack']} ({row['newly_broken']} broken first)"
                                            for row in breakers) + ".")
    if len(report.curve) > 1:
        lines.append("Curve: " + ", ".join(f"eps {e:.4g}: {100 * a:.1f}%" for e, a in report.curve) + ".")
    for check in report.sanity:
        if check.status != "pass":
            lines.append(f"Sanity check '{check.name}' warns: {check.detail}. {check.meaning.rstrip('.')}; "
                         f"{check.action.rstrip('.')}.")
    for diagnostic in report.diagnostics:
        if diagnostic.status == "warn":
            lines.append(f"Diagnostic {diagnostic.number} ({diagnostic.check}) warns: {diagnostic.detail}")
    return "\n".join(lines)

