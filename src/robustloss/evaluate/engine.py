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
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustloss import distributed
from robustloss.progress import show_progress
from robustloss.checkpoint import atomic_save, remove_stale_temporaries
from robustloss.data.split import ImageSplit
from robustloss.device import resolve_device
from robustloss.errors import NonFiniteOutputError
from robustloss.evaluate.chunk_cache import ChunkCache, model_fingerprint
from robustloss.precision import check_precision
from robustloss.evaluate.config import AttackSpec, EvaluateConfig
from robustloss.evaluate.records import NOT_ATTACKED, NOT_SAMPLED, AttackRecord, Evaluation
from robustloss.evaluate.stochastic import is_stochastic
from robustloss.evaluate.worst_case import broken_within
from robustloss.models.predict import predict

PROBE_IMAGES = 32  # images of the two-pass stochasticity probe: enough for a random defence to show
_log = logging.getLogger(__name__)


@dataclass
class _Run:
    """What every (attack, eps) of one evaluation shares: the model, the data, the settings and where
    results go. Built once by ``run_plan``; the per-attack functions read it instead of a long argument list."""

    model: nn.Module
    split: ImageSplit
    config: EvaluateConfig
    device: torch.device
    num_classes: int
    cache: ChunkCache | None
    fingerprint: str
    save_adversarial: Path | None
    progress: bool | None
    redraws: int
    batches_per_rank: list = field(default_factory=list)  # under torchrun: how the batches of each attack were dealt


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
    labels = split.labels.numpy()
    stochastic = len(split) > 0 and is_stochastic(model, split.batch(slice(0, PROBE_IMAGES))[0].to(dev))
    redraws = int(config.redraws) if stochastic else 0
    seed, batch_size = config.seed, config.batch_size
    with seeded_global_rng(seed, dev):
        clean_pred = _clean_predictions(model, split, batch_size, dev)
    clean_redraws = None
    if redraws:
        with seeded_global_rng(seed + 1, dev):
            clean_redraws = np.stack([predict(model, split, batch_size=batch_size, device=dev).numpy()
                                      for _ in range(redraws)])
    evaluation = Evaluation(index=np.arange(len(split)), labels=labels, clean_pred=clean_pred,
                            meta=dict(meta or {}) | {"seed": seed, "mode": config.mode, "stochastic": stochastic}
                            | ({"precision": config.precision} if config.precision != "fp32" else {})
                            | ({"redraws": redraws} if redraws else {}),
                            clean_redraw_pred=clean_redraws)
    log(f"clean accuracy {100 * evaluation.clean_accuracy:.1f}% on {len(split)} samples")
    cache = ChunkCache(cache_dir) if cache_dir is not None else None
    run = _Run(model=model, split=split, config=config, device=dev,
               num_classes=int(getattr(model, "num_classes", labels.max() + 1 if len(labels) else 1)),
               cache=cache, fingerprint=model_fingerprint(model) if cache is not None else "",
               save_adversarial=Path(save_adversarial) if save_adversarial is not None else None,
               progress=progress, redraws=redraws)
    if distributed.current() is not None:
        evaluation.meta["batches_per_rank"] = run.batches_per_rank

    if stochastic:
        plan = [_final_iterate_on_random_models(spec, log) for spec in plan]
    for spec in plan:
        for eps in spec.eps:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                attack = spec.build(eps)
            for w in caught:
                log(f"warning: {w.message}")
            sampled = sample_subset(len(split), spec.n_samples, seed)
            to_attack = evaluation.clean_correct & sampled
            if config.mode == "worst-case" and attack.norm is not None and eps is not None:
                to_attack &= ~broken_within(evaluation, attack.norm, eps)
            record = _run_attack(run, attack, spec, eps, np.flatnonzero(to_attack), sampled)
            evaluation.records.append(record)
            shown = "-" if eps is None else f"{eps:g}"
            spread = evaluation.accuracy_over_draws(record)
            over_draws = (f", over {spread.draws} draws {100 * spread.mean:.1f} +- {100 * spread.std:.1f}%"
                          if spread is not None else "")
            subset = f" of a {int(sampled.sum())}-sample subset" if not sampled.all() else ""
            log(f"{spec.name:>9} eps={shown:<6} accuracy {100 * evaluation.accuracy(record):5.1f}%{subset}  "
                f"({int(record.attacked.sum())} attacked, {record.seconds:.1f}s{over_draws})")
    return evaluation


def _clean_predictions(model: nn.Module, split: ImageSplit, batch_size: int, device: torch.device) -> np.ndarray:
    """The clean verdicts; refused when any sample's logits are NaN/inf (the arg-max of NaN is arbitrary,
    so the clean and robust accuracies would be noise that looks like numbers)."""
    try:
        return predict(model, split, batch_size=batch_size, device=device, require_finite=True).numpy()
    except NonFiniteOutputError as err:
        raise NonFiniteOutputError(f"cannot evaluate this model: {err}. It has diverged or is broken; retrain it "
                                   "(e.g. with a lower learning rate) or check its weights") from None


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


def _run_attack(run: _Run, attack, spec: AttackSpec, eps, indices: np.ndarray, sampled: np.ndarray) -> AttackRecord:
    n, batch_size, split = len(run.split), run.config.batch_size, run.split
    # minimum-norm attacks (no budget) always run in fp32: see the module docstring
    precision = run.config.precision if eps is not None else "fp32"
    out = {"adv_pred": np.where(sampled, NOT_ATTACKED, NOT_SAMPLED).astype(np.int64), "linf": np.full(n, np.nan, dtype=np.float32),
           "l2": np.full(n, np.nan, dtype=np.float32), "queries": np.zeros(n, dtype=np.int64),
           "target": np.full(n, NOT_ATTACKED, dtype=np.int64)}
    redraw_pred = np.full((run.redraws, n), NOT_ATTACKED, dtype=np.int64) if run.redraws else None
    saved_index, saved_images = [], []
    objective = attack.objective_name
    hyperparameters = attack.hyperparameters()  # part of every chunk's cache key; computed once
    started = time.perf_counter()
    shown = "-" if eps is None else f"{eps:g}"
    starts = list(range(0, len(indices), batch_size))
    mine = [starts[i] for i in distributed.my_share(len(starts))]  # all of them in a single process
    done: list[tuple[int, dict]] = []
    for start in tqdm(mine, desc=f"{spec.name} eps={shown}", leave=False,
                      disable=not show_progress(run.progress) or not distributed.is_main()):
        idx = indices[start : start + batch_size]
        batch_seed = _derived_seed(run.config.seed, spec.name, eps, int(idx[0]))
        # precision joins the key only when it is not fp32, so caches written before it existed stay valid
        key = ChunkCache.key(attack=spec.name, params=hyperparameters, eps=eps, seed=batch_seed,
                             index=zlib.crc32(idx.tobytes()), n=len(idx), model=run.fingerprint,
                             with_images=run.save_adversarial is not None, targets=spec.targets,
                             **({"precision": precision} if precision != "fp32" else {}),
                             **({"redraws": run.redraws} if run.redraws else {}))
        chunk = run.cache.load(key) if run.cache is not None else None
        if chunk is None:
            chunk = _attack_chunk(attack, split, idx, run.num_classes, spec.targets, batch_seed, run.device,
                                  run.model, keep_images=run.save_adversarial is not None, precision=precision,
                                  redraws=run.redraws)
            if run.cache is not None:
                run.cache.save(key, chunk)
        done.append((start, chunk))
    if distributed.current() is not None:  # every rank's batches, on every rank, in the original order
        shares = distributed.gather(done)
        run.batches_per_rank.append([len(share) for share in shares])
        done = sorted((pair for share in shares for pair in share), key=lambda pair: pair[0])
    for start, chunk in done:
        idx = indices[start : start + batch_size]
        for name in out:
            out[name][idx] = chunk[name]
        if redraw_pred is not None:
            redraw_pred[:, idx] = chunk["redraw_pred"]
        objective = str(chunk["objective"]) if "objective" in chunk else objective
        if run.save_adversarial is not None:
            saved_index.append(idx[chunk["fooled"]])
            saved_images.append(chunk["x_adv"])
    params = dict(hyperparameters)
    if objective and objective != params.get("objective"):
        params |= {"objective": objective, "objective_requested": params.get("objective")}
    if attack.targeted:
        params["targets"] = spec.targets
    if precision != "fp32":
        params["precision"] = precision
    attack_name = spec.resolved()[0]
    label = spec.label or (spec.attack if spec.attack != attack_name else "")  # a preset keeps its own name
    record = AttackRecord(attack=attack_name, eps=eps, params=params, seconds=time.perf_counter() - started,
                          norm=attack.norm, label=label,
                          adv_pred=out["adv_pred"], linf=out["linf"], l2=out["l2"], queries=out["queries"],
                          target=out["target"] if attack.targeted else None, redraw_pred=redraw_pred)
    if run.save_adversarial is not None and distributed.is_main():
        _save_examples(run.save_adversarial, record, split, saved_index, saved_images)
    return record


def _attack_chunk(attack, split: ImageSplit, idx: np.ndarray, num_classes: int, targets: str, batch_seed: int,
                  device, model, keep_images: bool, precision: str = "fp32", redraws: int = 0) -> dict[str, np.ndarray]:
    x, y = split.batch(torch.from_numpy(idx))
    generator = torch.Generator().manual_seed(batch_seed)
    target = None
    if attack.targeted:
        if targets == "next":
            target = (y + 1) % num_classes
        else:  # a uniformly random wrong class
            target = (y + torch.randint(1, num_classes, y.shape, generator=generator)) % num_classes
    with seeded_global_rng(batch_seed, device):  # a random model's draws are reproducible per batch
        result = attack(model, x.to(device), y.to(device), target=None if target is None else target.to(device),
                        generator=generator, precision=precision)
    adv_pred = result.pred.cpu().numpy()
    chunk = {"adv_pred": adv_pred, "linf": result.linf.cpu().float().numpy(), "l2": result.l2.cpu().float().numpy(),
             "queries": result.queries.cpu().numpy(), "objective": np.array(result.objective),
             "target": (target.numpy() if target is not None else np.full(len(idx), NOT_ATTACKED, dtype=np.int64))}
    if redraws:
        with seeded_global_rng(batch_seed + 1, device):
            chunk["redraw_pred"] = np.stack([predict(model, result.x_adv, device=device).numpy()
                                             for _ in range(redraws)])
    if keep_images:
        fooled = adv_pred != y.numpy()
        chunk |= {"fooled": fooled, "x_adv": result.x_adv[torch.from_numpy(fooled).to(result.x_adv.device)].cpu().numpy()}
    return chunk


def _final_iterate_on_random_models(spec: AttackSpec, log: Callable[[str], None]) -> AttackSpec:
    """``early_stop=False`` for an attack on a stochastic model unless the spec sets it.

    Early stopping keeps the first iterate judged adversarial, and without EOT that judgement is one
    random draw: the kept iterate often fools only that draw, and more steps give more lucky draws.
    On a LeNet-5 behind random-resize-pad, PGD eps 0.2 left 58 % standing with early stopping and 8 %
    without it, and 200 steps left more standing than 40. The final iterate (the papers' protocol) is
    the honest default there; the record's parameters show ``early_stop: False``."""
    from robustloss.attacks import ATTACKS

    name, params = spec.resolved()
    if "early_stop" in params or "early_stop" not in ATTACKS.parameters(name):
        return spec
    log(f"{spec.name}: the model is stochastic, so the attack returns its final iterate (early_stop=False)")
    return dataclasses.replace(spec, params={**spec.params, "early_stop": False})


@contextlib.contextmanager
def seeded_global_rng(seed: int, device):
    """Run the block under a fork of the global torch RNG (CPU, and the CUDA device in use) seeded with
    ``seed``; the caller's random stream is left exactly as it was."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:  # only the device forked above: torch.manual_seed would also reseed every other GPU
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _save_examples(folder: Path, record: AttackRecord, split: ImageSplit, index: list, images: list) -> Path:
    index_all = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
    images_all = np.concatenate(images) if images else np.zeros((0, *split.images.shape[1:]), dtype=np.float32)
    eps = "none" if record.eps is None else f"{record.eps:g}"
    remove_stale_temporaries(folder)  # what a killed earlier save left (up to a whole file of images)
    return atomic_save(
        {"index": torch.from_numpy(index_all), "x_adv": torch.from_numpy(images_all),
         "label": split.labels[torch.from_numpy(index_all)], "adv_pred": torch.from_numpy(record.adv_pred[index_all]),
         "attack": record.name, "eps": record.eps, "params": {k: str(v) for k, v in record.params.items()}},
        folder / f"{record.name}_eps{eps}.pt",
    )


def _derived_seed(seed: int, attack: str, eps: float | None, first_index: int) -> int:
    shown = "none" if eps is None else f"{eps:.10g}"
    return (seed * 1_000_003 + zlib.crc32(f"{attack}|{shown}|{first_index}".encode())) % (2**63)
