"""The one path every evaluation takes: ``run_evaluation(model, data, config)``.

``robustloss eval``, the experiment runner, ``standard_evaluation`` and the Python ``evaluate()`` all
come here, so an evaluation made any of these ways gets the same treatment:

1. the data may be an ``ImageSplit``, a ``(images, labels)`` pair of tensors or a ``DataLoader``
   (``as_split``); images must be in [0, 1] (normalisation belongs inside the model);
2. the defence of ``config.defense`` wraps the model;
3. the pre-attack sanity checks (``robustloss.evaluate.sanity``) look at the model's outputs: a model
   that returns probabilities is attacked through ``log p`` (a logit vector whose softmax is p), since
   CE on probabilities taken as logits has near-flat gradients; inputs outside [0, 1] are refused;
4. with ``config.diagnostics`` the probe attacks join the plan (at every budget of the plan), the
   input-gradient probe covers every objective the plan's attacks use, and the gradient-masking
   checks run on the records;
5. the engine (``robustloss.evaluate.engine.run_plan``) runs the plan.

Everything found is kept in ``evaluation.meta``: ``sanity``, ``gradient_probe`` and ``diagnostics``
(read the latter back with ``diagnostics_of``). The model is left in the train/eval mode it came in.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from robustloss.attacks.base import GradientFreeAttack
from robustloss.attacks.registry import ATTACKS
from robustloss.data.split import ImageSplit
from robustloss.defenses import apply_defense
from robustloss.device import resolve_device
from robustloss.evaluate.config import AttackSpec, DefenseSpec, EvaluateConfig
from robustloss.evaluate.diagnostics import Diagnostic, diagnose
from robustloss.evaluate.probes import gradient_probe, plan_objectives, probe_plan
from robustloss.evaluate.engine import run_plan
from robustloss.evaluate.records import Evaluation
from robustloss.evaluate.sanity import SanityCheck, as_logits, sanity_checks
from robustloss.errors import SanityCheckError
from robustloss.models.modes import kept_modes

_log = logging.getLogger(__name__)
SANITY_SAMPLES = 256  # images the pre-attack checks look at: a few forward/backward passes
GRADIENT_PROBE_SAMPLES = 500


def as_split(data: Any, labels: Tensor | None = None) -> ImageSplit:
    """``data`` as an ``ImageSplit``: an ``ImageSplit`` (returned as is), a dataset with a ``test``
    split, images with ``labels``, an ``(images, labels)`` pair, or an iterable of ``(images, labels)``
    batches such as a ``DataLoader``. Images are NCHW (a single-channel NHW batch gets its channel axis)."""
    if isinstance(data, ImageSplit):
        return data
    if labels is None and isinstance(getattr(data, "test", None), ImageSplit):
        return data.test
    if isinstance(data, Tensor):
        if labels is None:
            raise ValueError("images given without labels: pass evaluate(model, (x, y), ...) or labels=y")
        return _from_tensors(data, labels)
    if labels is not None:
        raise ValueError(f"labels are only taken with an images tensor, not with {type(data).__name__}")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return _from_tensors(*data)
    if isinstance(data, Iterable):
        images, targets = [], []
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise ValueError("a data loader must yield (images, labels) batches")
            images.append(torch.as_tensor(batch[0]).detach().cpu())
            targets.append(torch.as_tensor(batch[1]).detach().cpu())
        if not images:
            raise ValueError("the data loader yielded no batches")
        return _from_tensors(torch.cat(images), torch.cat(targets))
    raise ValueError(f"cannot evaluate on {type(data).__name__}: pass an ImageSplit, (images, labels) tensors "
                     "or a DataLoader of (images, labels)")


def _from_tensors(images: Tensor, labels: Tensor) -> ImageSplit:
    images, labels = images.detach().cpu(), torch.as_tensor(labels).detach().cpu()
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must be NCHW (or NHW for one channel), got shape {tuple(images.shape)}")
    if labels.dim() != 1 or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be a 1-d tensor of class indices, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}")
    if images.dtype != torch.uint8:
        images = images.to(torch.float32)
        if not torch.isfinite(images).all():
            raise ValueError("the images contain NaN or infinite values")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise ValueError(f"images must be in [0, 1] (found values in [{low:.3g}, {high:.3g}]): put the "
                             "normalisation inside the model, so attacks perturb real pixels")
    return ImageSplit(images, labels.to(torch.int64))


def run_evaluation(
    model: nn.Module,
    data: Any,
    config: EvaluateConfig,
    *,
    device: str | torch.device | None = "auto",
    cache_dir: str | Path | None = None,
    save_adversarial: str | Path | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = _log.info,
    meta: dict | None = None,
    sanity: bool = True,
) -> Evaluation:
    """Evaluate ``model`` on ``data`` as ``config`` says (see the module docstring for every step)."""
    split = as_split(data)
    if config.n_test is not None and config.n_test < len(split):  # the engine would cut it too; so do the checks
        split = split.subset(slice(0, config.n_test))
    dev = resolve_device(device)
    was_training = model.training
    with kept_modes(model):
        attacked = model.to(dev)
        if config.defense is not None:  # the same trained model, attacked behind the defence
            attacked = apply_defense(attacked, config.defense.name, **config.defense.params)
        plan = config.plan()
        checks: list[SanityCheck] = []
        if sanity and len(split):
            checks = _sanity(attacked, split, plan, was_training, dev, log)
            attacked = as_logits(attacked, checks)
            plan = gradient_free_first(plan, checks, config.mode, log)
        attacked.eval()
        probes = probe_plan(plan) if config.diagnostics else []
        evaluation = run_plan(attacked, split, plan + probes, config, device=dev, cache_dir=cache_dir,
                              save_adversarial=save_adversarial, progress=progress, log=log, meta=meta)
        if checks:
            evaluation.meta["sanity"] = [dataclasses.asdict(c) for c in checks]
        if config.diagnostics:
            evaluation.meta["gradient_probe"] = gradient_probe(
                attacked, split, objectives=plan_objectives(plan, attacked),
                n=min(GRADIENT_PROBE_SAMPLES, evaluation.n), device=dev)
            found = diagnose(evaluation)
            evaluation.meta["diagnostics"] = [dataclasses.asdict(d) for d in found]
            warned = [d.check for d in found if d.status == "warn"]
            failed = f"; these did not hold: {'; '.join(warned)}" if warned else ""
            log(f"diagnostics: {len(warned)} warning(s){failed}")
    return evaluation


def _sanity(model: nn.Module, split: ImageSplit, plan: list[AttackSpec], was_training: bool, device,
            log: Callable[[str], None]) -> list[SanityCheck]:
    x, y = split.batch(slice(0, min(SANITY_SAMPLES, len(split))))
    objectives = plan_objectives(plan, model) or ["ce"]
    checks = sanity_checks(model, x.to(device), y.to(device), objectives=objectives, was_training=was_training)
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise SanityCheckError(f"cannot evaluate honestly: {failed[0].detail}; {failed[0].action}")
    for check in checks:
        if check.status == "warn":
            log(sanity_line(check, plan))
    return checks


# The attacks a sanity check's ``action`` relies on: outside an ensemble that has them (a paper's
# protocol, say) the line points to the probes and the standard evaluation instead of promising them.
_ENSEMBLE_ATTACKS = {"square", "apgd-t", "fab-t", "fab", "apgd-dlr"}


# Share of samples whose input gradient is zero or non-finite for every objective of the plan, above
# which a worst-case ensemble runs its gradient-free attacks first (see gradient_free_first).
DEAD_GRADIENT_SHARE = 0.5


def gradient_free_first(plan: list[AttackSpec], checks: list[SanityCheck], mode: str,
                        log: Callable[[str], None] = _log.info) -> list[AttackSpec]:
    """``plan`` with its gradient-free attacks (Square, SPSA, ...) moved to the front when the sanity
    checks found the input gradients dead on most samples for every objective the plan uses.

    Only in worst-case mode, where each attack gets the samples its predecessors left standing: there,
    100-iteration gradient attacks that cannot move a sample would spend their whole budget on it
    before the gradient-free attack breaks it in a few queries. The worst case is the same either
    way (a sample counts as robust only if no attack breaks it); only the time changes. Protocol
    mode attacks every sample with every attack, so its order does not matter."""
    check = next((c for c in checks if c.name == "gradients"), None)
    if mode != "worst-case" or check is None or check.status != "warn":
        return plan
    shares = [counts["share"] for counts in check.numbers.get("objectives", {}).values() if "share" in counts]
    if not shares or min(shares) <= DEAD_GRADIENT_SHARE:
        return plan
    free = [spec for spec in plan if issubclass(ATTACKS.get(spec.resolved()[0]), GradientFreeAttack)]
    if not free or plan[:len(free)] == free:
        return plan
    log(f"input gradients are dead on most samples for every objective: {', '.join(s.name for s in free)} "
        "runs first, so the gradient attacks only get the samples it leaves")
    return free + [spec for spec in plan if all(spec is not moved for moved in free)]


def sanity_line(check: SanityCheck, plan: list[AttackSpec]) -> str:
    """One readable log line for a sanity check: what was found, what it means, what is done about it."""
    line = f"sanity check {check.name}: {check.detail}. {check.meaning.rstrip('.')}."
    if not check.action:
        return line
    needs_ensemble = check.name in ("gradients", "saturated-logits")
    if needs_ensemble and not _ENSEMBLE_ATTACKS & {spec.attack for spec in plan}:
        return (f"{line} This plan has no gradient-free or scale-invariant attack: the diagnostics' probes "
                "(margin objective at every eps) and `robustloss eval --standard` give the honest number.")
    return f"{line} Done about it: {check.action.rstrip('.')}."


def diagnostics_of(evaluation: Evaluation) -> list[Diagnostic]:
    """The gradient-masking checks stored in ``evaluation.meta`` by ``run_evaluation`` ([] if none ran)."""
    return [Diagnostic(**d) for d in evaluation.meta.get("diagnostics", [])]


def evaluate(
    model: nn.Module,
    data: Any,
    plan: list[AttackSpec],
    *,
    seed: int = 0,
    batch_size: int = 500,
    max_samples: int | None = None,
    mode: Literal["protocol", "worst-case"] = "protocol",
    objective: str | None = "adaptive",
    precision: Literal["fp32", "bf16"] = "fp32",
    redraws: int = 10,
    diagnostics: bool = False,
    defense: DefenseSpec | None = None,
    device: str | torch.device | None = "auto",
    cache_dir: str | Path | None = None,
    save_adversarial: str | Path | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = _log.info,
    meta: dict | None = None,
) -> Evaluation:
    """Run ``plan`` on ``data`` (``ImageSplit``, ``(x, y)`` tensors or a ``DataLoader``): the Python
    shorthand for ``run_evaluation(model, data, EvaluateConfig(attacks=plan, ...))``.

    * ``plan``: ``AttackSpec``s (an attack or preset name, its budgets, parameters, a label).
    * ``mode``: ``"protocol"`` attacks every sample with every attack, and each summary row is that
      attack's own accuracy (a paper's table); ``"worst-case"`` gives each attack only the samples the
      ones before it left standing, so each summary row is the running worst case over the attacks so
      far, and the last row at a budget is the ensemble's robust accuracy.
    * ``objective``: the loss every attack that does not choose one maximises; ``"adaptive"`` (the
      default) fits the model's training loss (ce, mmc, or the logit margin for an unknown model).
    * ``max_samples``: the first N samples only; ``seed``: every attack's randomness (per sample, so
      results do not depend on the batch size); ``batch_size``: samples per attack call.
    * ``diagnostics``: adds the probe attacks and the gradient-masking checks (``diagnostics_of``).
    * ``progress``: bars on a terminal only by default; ``log``: where progress lines go (the
      ``robustloss`` logger by default; nothing is printed unless logging is configured).

    The model's train/eval mode and ``requires_grad`` flags are restored afterwards."""
    config = EvaluateConfig(attacks=list(plan), n_test=max_samples, batch_size=batch_size, mode=mode,
                            objective=objective, diagnostics=diagnostics, seed=seed, precision=precision,
                            defense=defense, redraws=redraws)
    return run_evaluation(model, data, config, device=device, cache_dir=cache_dir,
                          save_adversarial=save_adversarial, progress=progress, log=log, meta=meta)
