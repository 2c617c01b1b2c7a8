"""``run_plan(model, split, plan, config)``: run every (attack, eps) of a plan over a test split.

* Clean-misclassified samples are never attacked: under the papers' convention they count as
  failures anyway.
* ``mode="protocol"`` attacks every clean-correct sample with every attack (the papers'
  tables; each attack's accuracy stands alone). ``mode="worst-case"`` attacks, at each
  budget, only the samples no earlier attack of the same norm has broken within that budget
  (AutoAttack's order of work): far fewer attack runs for the same worst-case number, but a
  later attack's own accuracy is then only a bound.
* Batches are attacked whole. Each (attack, eps, batch) draws its random numbers from its
  own generator, derived from the seed, the attack and the batch's first sample, so results
  are identical under a fixed seed.
* An attack that never queries the model (``queries_target = False``: transfer attacks) is run in
  protocol mode on the whole sampled set, clean-misclassified samples included, so its batches and
  seeds do not depend on the model: every target is submitted the same images, and a second target
  reuses the first one's from the in-memory memo instead of crafting them again. Its record still
  covers only the clean-correct samples.
* ``cache_dir`` keeps every finished batch on disk (``ChunkCache``): a killed evaluation
  re-run with the same arguments continues where it stopped.
* ``save_adversarial`` writes, per (attack, eps), the successful adversarial examples with
  their sample indices, as a tensor file loadable with ``torch.load(weights_only=True)``.
* ``precision="bf16"`` runs the budgeted attacks' gradient steps under bf16 autocast (the
  verdict on every sample is still an fp32 forward pass). Minimum-norm attacks (C&W,
  DeepFool: no budget) always run in fp32: in bf16 they find far fewer adversarial examples
  (DeepFool on a LeNet-5: 54 % "robust" against 0 % in fp32), which would flatter the model.
* A stochastic model (a randomised defence) draws from the global torch RNG. Every batch of every
  attack (and the clean pass) runs under a forked global RNG seeded from its own seed, so such models
  too give identical records under a fixed seed, after a resume from the cache and under torchrun.
  Whether the model is stochastic is tested first (two passes on the same images differ:
  ``meta["stochastic"]``, which diagnostic 9 reads). If it is, ``redraws=K`` (default 10, 0 = off)
  repeats the final prediction of every evaluated image K more times (clean and adversarial, fp32)
  and stores them in the records (``Evaluation.accuracy_over_draws``): a single pass of a random model
  is one draw, and K draws show how far the headline number can move. Attacks on a stochastic
  model return their final iterate (``early_stop=False``) unless the plan sets ``early_stop``:
  an iterate judged adversarial on one random draw is a weak adversarial example.
* Under ``torchrun`` the batches of every (attack, eps) are dealt round-robin to the ranks;
  each rank attacks its own, and the finished batches are gathered so that every rank holds
  the whole record (worst-case mode needs it to choose the next attack's samples). Batches
  and their seeds are the same as in one process, so the records are identical; only rank 0
  writes files.

The per-batch work of one (attack, eps) (seeds, cache keys, the ranks' shares, saved examples) is in
``robustloss.evaluate.attack_batches``; this module decides what each attack runs on and in what order.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from robustloss import distributed
from robustloss.attacks import ATTACKS
from robustloss.data.split import ImageSplit
from robustloss.device import resolve_device
from robustloss.errors import NonFiniteOutputError
from robustloss.evaluate.attack_batches import PlanContext, run_attack, seeded_global_rng
from robustloss.evaluate.chunk_cache import ChunkCache, model_fingerprint
from robustloss.precision import check_precision
from robustloss.evaluate.config import AttackSpec, EvaluateConfig
from robustloss.evaluate.records import AttackRecord, Evaluation
from robustloss.evaluate.stochastic import is_stochastic
from robustloss.evaluate.worst_case import broken_within
from robustloss.models.predict import predict

PROBE_IMAGES = 32  # images of the two-pass stochasticity probe: enough for a random defence to show
_log = logging.getLogger(__name__)


def run_plan(
    model: nn.Module,
    split: ImageSplit,
    plan: list[AttackSpec],
    config: EvaluateConfig,
    *,
    device: str | torch.device | None = "auto",
    cache_dir: str | Path | None = None,
    save_adversarial: str | Path | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = _log.info,
    meta: dict | None = None,
) -> Evaluation:
    """Run every (attack, eps) of ``plan`` on ``split`` with the settings of ``config`` (seed, batch size,
    sample count, mode, precision, redraws; its ``attacks`` are not read: ``plan`` is what runs, so callers
    can add probes). ``robustloss.evaluate.run.run_evaluation`` is the front door that builds the plan."""
    check_precision(config.precision)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    if config.n_test is not None and config.n_test < len(split):
        split = split.subset(slice(0, config.n_test))
    stochastic = len(split) > 0 and is_stochastic(model, split.batch(slice(0, PROBE_IMAGES))[0].to(dev))
    redraws = int(config.redraws) if stochastic else 0
    evaluation = _clean_evaluation(model, split, config, dev, redraws, _meta(meta, config, stochastic, redraws))
    log(f"clean accuracy {100 * evaluation.clean_accuracy:.1f}% on {len(split)} samples")
    labels = evaluation.labels
    cache = ChunkCache(cache_dir) if cache_dir is not None else None
    context = PlanContext(model=model, split=split, config=config, device=dev,
                          num_classes=int(getattr(model, "num_classes", labels.max() + 1 if len(labels) else 1)),
                          cache=cache, fingerprint=model_fingerprint(model) if cache is not None else "",
                          save_adversarial=Path(save_adversarial) if save_adversarial is not None else None,
                          progress=progress, redraws=redraws)
    if distributed.current() is not None:
        evaluation.meta["batches_per_rank"] = context.batches_per_rank

    if stochastic:
        plan = [_final_iterate_on_random_models(spec, log) for spec in plan]
    for spec in plan:
        for eps in spec.eps:
            _run_budget(context, evaluation, spec, eps, log)
    return evaluation


def _meta(meta: dict | None, config: EvaluateConfig, stochastic: bool, redraws: int) -> dict:
    """The caller's ``meta`` plus the settings the records depend on: seed, mode, whether the model is
    stochastic, and precision and redraws where they differ from the default (fp32, none)."""
    return (dict(meta or {}) | {"seed": config.seed, "mode": config.mode, "stochastic": stochastic}
            | ({"precision": config.precision} if config.precision != "fp32" else {})
            | ({"redraws": redraws} if redraws else {}))


def _clean_evaluation(model: nn.Module, split: ImageSplit, config: EvaluateConfig, device: torch.device,
                      redraws: int, meta: dict) -> Evaluation:
    """The evaluation before any attack: the clean verdicts (and, for a stochastic model, ``redraws`` more
    clean predictions), each pass under its own seeded global RNG so a random model gives the same draws."""
    seed, batch_size = config.seed, config.batch_size
    with seeded_global_rng(seed, device):
        clean_pred = _clean_predictions(model, split, batch_size, device)
    clean_redraws = None
    if redraws:
        with seeded_global_rng(seed + 1, device):
            clean_redraws = np.stack([predict(model, split, batch_size=batch_size, device=device).numpy()
                                      for _ in range(redraws)])
    return Evaluation(index=np.arange(len(split)), labels=split.labels.numpy(), clean_pred=clean_pred, meta=meta,
                      clean_redraw_pred=clean_redraws)


def _clean_predictions(model: nn.Module, split: ImageSplit, batch_size: int, device: torch.device) -> np.ndarray:
    """The clean verdicts; refused when any sample's logits are NaN/inf (the arg-max of NaN is arbitrary,
    so the clean and robust accuracies would be noise that looks like numbers)."""
    try:
        return predict(model, split, batch_size=batch_size, device=device, require_finite=True).numpy()
    except NonFiniteOutputError as err:
        raise NonFiniteOutputError(f"cannot evaluate this model: {err}. It has diverged or is broken; retrain it "
                                   "(e.g. with a lower learning rate) or check its weights") from None


def _run_budget(context: PlanContext, evaluation: Evaluation, spec: AttackSpec, eps: float | None,
                log: Callable[[str], None]) -> None:
    """Run ``spec`` at budget ``eps`` on the samples it is owed, add its record to ``evaluation`` and log it.

    The samples are the clean-correct ones of the attack's subset; in worst-case mode, only those that no
    earlier attack of the same norm has broken within ``eps``."""
    attack = _build_attack(spec, eps, log)
    sampled = sample_subset(len(context.split), spec.n_samples, context.config.seed)
    to_attack = evaluation.clean_correct & sampled
    batch_over = None
    if context.config.mode == "worst-case" and attack.norm is not None and eps is not None:
        to_attack &= ~broken_within(evaluation, attack.norm, eps)
    elif not attack.queries_target:
        # A transfer attack's examples do not depend on the target: crafted over the whole sampled set,
        # its batches and seeds are the same for every model evaluated, so every target is submitted the
        # same images and a second target reuses the first one's (attacks/crafted_memo.py). Worst-case
        # mode keeps to the samples still standing, which differ between targets.
        batch_over = np.flatnonzero(sampled)
    record = run_attack(context, attack, spec, eps, np.flatnonzero(to_attack), sampled, batch_over)
    evaluation.records.append(record)
    log(_summary(evaluation, record, spec, eps, sampled))


def _build_attack(spec: AttackSpec, eps: float | None, log: Callable[[str], None]):
    """``spec`` built at ``eps``. Its warnings (e.g. steps too few to reach the budget) go to ``log``, every
    time, so they stand in the evaluation's log next to the attack they concern."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attack = spec.build(eps)
    for w in caught:
        log(f"warning: {w.message}")
    return attack


def _summary(evaluation: Evaluation, record: AttackRecord, spec: AttackSpec, eps: float | None,
             sampled: np.ndarray) -> str:
    """The log line of one finished (attack, eps): its accuracy, the subset and the spread over redraws."""
    shown = "-" if eps is None else f"{eps:g}"
    spread = evaluation.accuracy_over_draws(record)
    over_draws = (f", over {spread.draws} draws {100 * spread.mean:.1f} +- {100 * spread.std:.1f}%"
                  if spread is not None else "")
    subset = f" of a {int(sampled.sum())}-sample subset" if not sampled.all() else ""
    return (f"{spec.name:>9} eps={shown:<6} accuracy {100 * evaluation.accuracy(record):5.1f}%{subset}  "
            f"({int(record.attacked.sum())} attacked, {record.seconds:.1f}s{over_draws})")


def sample_subset(n: int, n_samples: int | None, seed: int) -> np.ndarray:
    """Mask of the samples an attack with ``n_samples`` evaluates: all of them, or a fixed random
    subset drawn from (seed, n) alone, so every model and every attack of an evaluation with the
    same ``n_samples`` gets the same images (a smaller subset is a prefix of a larger one's order)."""
    mask = np.ones(n, dtype=bool)
    if n_samples is not None and n_samples < n:
        order = np.random.default_rng([seed, n, 0x5EED]).permutation(n)
        mask[:] = False
        mask[order[:n_samples]] = True
    return mask


def _final_iterate_on_random_models(spec: AttackSpec, log: Callable[[str], None]) -> AttackSpec:
    """``early_stop=False`` for an attack on a stochastic model unless the spec sets it.

    Early stopping keeps the first iterate judged adversarial, and without EOT that judgement is one
    random draw: the kept iterate often fools only that draw, and more steps give more lucky draws.
    On a LeNet-5 behind random-resize-pad, PGD eps 0.2 left 58 % standing with early stopping and 8 %
    without it, and 200 steps left more standing than 40. The final iterate (the papers' protocol) is
    the honest default there; the record's parameters show ``early_stop: False``."""
    name, params = spec.resolved()
    if "early_stop" in params or "early_stop" not in ATTACKS.parameters(name):
        return spec
    log(f"{spec.name}: the model is stochastic, so the attack returns its final iterate (early_stop=False)")
    return dataclasses.replace(spec, params={**spec.params, "early_stop": False})
