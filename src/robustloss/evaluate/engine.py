"""``evaluate(model, split, plan)``: run every (attack, eps) of a plan over a test split.

Batches are attacked whole (no per-sample loop). Each (attack, eps, batch) draws its
random numbers from its own generator, derived from the seed and its position in the
plan, so results are identical under a fixed seed regardless of batch order or of which
other attacks run.
"""

from __future__ import annotations

import time
import warnings
import zlib
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from robustloss.data.split import ImageSplit
from robustloss.device import resolve_device
from robustloss.evaluate.plan import AttackSpec
from robustloss.evaluate.records import AttackRecord, Evaluation
from robustloss.models.classifier import Classifier
from robustloss.train.loop import predict


def evaluate(
    model: Classifier,
    split: ImageSplit,
    plan: list[AttackSpec],
    *,
    batch_size: int = 500,
    seed: int = 0,
    device: str | None = "auto",
    max_samples: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    meta: dict | None = None,
) -> Evaluation:
    dev = resolve_device(device)
    model = model.to(dev).eval()
    if max_samples is not None and max_samples < len(split):
        split = split.subset(slice(0, max_samples))
    index = np.arange(len(split))
    labels = split.labels.numpy()
    clean_pred = predict(model, split, batch_size=batch_size, device=dev).numpy()
    evaluation = Evaluation(index=index, labels=labels, clean_pred=clean_pred, meta=dict(meta or {}) | {"seed": seed})
    log(f"clean accuracy {100 * evaluation.clean_accuracy:.1f}% on {len(split)} samples")

    for spec in plan:
        for eps in spec.eps:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                attack = spec.build(eps)
            for w in caught:
                log(f"warning: {w.message}")
            started = time.perf_counter()
            parts: dict[str, list[np.ndarray]] = {"adv_pred": [], "linf": [], "l2": [], "queries": []}
            objective = ""
            batches = range(0, len(split), batch_size)
            for start in tqdm(batches, desc=f"{spec.attack} eps={eps:g}", leave=False, disable=not progress):
                x, y = split.batch(slice(start, start + batch_size))
                generator = torch.Generator().manual_seed(_derived_seed(seed, spec.attack, eps, start))
                result = attack(model, x.to(dev), y.to(dev), generator=generator)
                parts["adv_pred"].append(result.pred.cpu().numpy())
                parts["linf"].append(result.linf.cpu().float().numpy())
                parts["l2"].append(result.l2.cpu().float().numpy())
                parts["queries"].append(result.queries.cpu().numpy())
                objective = result.objective
            params = attack.hyperparameters()
            if objective and objective != params.get("objective"):
                params |= {"objective": objective, "objective_requested": params.get("objective")}
            record = AttackRecord(
                attack=spec.attack, eps=float(eps), params=params,
                seconds=time.perf_counter() - started, **{k: np.concatenate(v) for k, v in parts.items()},
            )
            evaluation.records.append(record)
            log(f"{spec.attack:>5} eps={eps:<5g} accuracy {100 * evaluation.accuracy(record):5.1f}%  "
                f"({record.seconds:.1f}s)")
    return evaluation


def _derived_seed(seed: int, attack: str, eps: float, start: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{attack}|{eps:.10g}|{start}".encode())) % (2**63)
