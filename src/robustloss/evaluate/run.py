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

from robustloss.data.split import ImageSplit
from robustloss.defenses import apply_defense
from robustloss.device import resolve_device
from robustloss.evaluate.config import AttackSpec, DefenseSpec, EvaluateConfig
from robustloss.evaluate.diagnostics import Diagnostic, diagnose, gradient_probe, plan_objectives, probe_plan
from robustloss.evaluate.engine import run_plan
from robustloss.evaluate.records import Evaluation
from robustloss.evaluate.sanity import SanityCheck, as_logits, sanity_checks
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
    progress: bool = True,
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
            log(f"diagnostics: {len(warned)} warning(s){': ' + '; '.join(warned) if warned else ''}")
    return evaluation


def _sanity(model: nn.Module, split: ImageSplit, plan: list[AttackSpec], was_training: bool, device,
            log: Callable[[str], None]) -> list[SanityCheck]:
    x, y = split.batch(slice(0, min(SANITY_SAMPLES, len(split))))
    objectives = plan_objectives(plan, model) or ["ce"]
    checks = sanity_checks(model, x.to(device), y.to(device), objectives=objectives, was_training=was_training)
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise ValueError(f"cannot evaluate honestly: {failed[0].detail}; {failed[0].action}")
    for check in checks:
        if check.status == "warn":
            log(f"sanity check {check.name}: {check.detail}. {check.meaning} {check.action}".strip())
    return checks


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
    objective: str | None = None,
    precision: Literal["fp32", "bf16"] = "fp32",
    redraws: int = 10,
    diagnostics: bool = False,
    defense: DefenseSpec | None = None,
    device: str | torch.device | None = "auto",
    cache_dir: str | Path | None = None,
    save_adversarial: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = _log.info,
    meta: dict | None = None,
) -> Evaluation:
    """Run ``plan`` on ``data`` (``ImageSplit``, ``(x, y)`` tensors or a ``DataLoader``): the Python
    shorthand for ``run_evaluation(model, data, EvaluateConfig(attacks=plan, ...))``. ``diagnostics``
    adds the probe attacks and the gradient-masking checks (``diagnostics_of(evaluation)``)."""
    config = EvaluateConfig(attacks=list(plan), n_test=max_samples, batch_size=batch_size, mode=mode,
                            objective=objective, diagnostics=diagnostics, seed=seed, precision=precision,
                            defense=defense, redraws=redraws)
    return run_evaluation(model, data, config, device=device, cache_dir=cache_dir,
                          save_adversarial=save_adversarial, progress=progress, log=log, meta=meta)
