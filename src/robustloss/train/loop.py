"""One epoch of training: shuffle with the run's generator, augment, optionally replace part of
the batch by adversarial examples, step, watch for NaN.

The split may live on the training device (``ImageSplit.to``): the shuffle is still drawn on
the CPU generator and only the index moves, so the order is the same wherever the data is.
``precision="bf16"`` runs the step's forward passes (adversarial crafting included) under
autocast, with the loss in float32 (``robustloss.train.speed``).

Under ``torchrun`` every rank draws the same shuffle and augments the same global batch from
the same generator, then trains on its slice of it (device-resident sharding: no sampler,
no copy of the data per epoch); DDP averages the gradients. Each rank's loss is weighted by
its share of the global batch, so the averaged gradient is the gradient of the global batch's
mean loss, as in one process. Adversarial draws, which differ per slice, come from a
generator per step and rank, seeded from a copy of the shared one: the shared stream advances
exactly as in one process, and a resumed run draws the same numbers. (Without adversarial
training a run under torchrun thus equals the single-process run up to floating-point order;
with it, the draws differ from one process's, and the training is the same in distribution.)
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from robustloss import distributed
from robustloss.progress import show_progress
from robustloss.data.split import ImageSplit
from robustloss.errors import NonFiniteLossError
from robustloss.losses.base import Loss
from robustloss.models.classifier import Classifier
from robustloss.train.speed import autocast_context, full_precision_loss, prepare_batch
from robustloss.train.step import TrainingStep


class AdversarialHook(Protocol):
    """One adversarial training step's loss. Implementations: ``AdversarialTraining`` (mixes
    adversarial examples into the batch) and ``TradesTraining`` (adds a KL term)."""

    def step_loss(self, loss_fn: Callable[..., Tensor], x: Tensor, y: Tensor, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor, int]:
        """(loss, logits of the examples trained on, how many of them are adversarial); ``loss_fn``
        is the phase's loss, or its float32 guard under bf16 (``FullPrecisionLoss``)."""


def train_one_epoch(
    model: Classifier,
    loss_fn: Loss,
    split: ImageSplit,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None,
    device: torch.device,
    desc: str = "",
    progress: bool | None = None,
    adversarial: AdversarialHook | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict[str, float]:
    """Train for one epoch; returns mean train_loss and train_acc over the batches as trained
    (with ``adversarial``, over the mixed clean/adversarial batches, plus ``adv_fraction``)."""
    model.train()
    order = torch.randperm(len(split), generator=generator).to(split.device)
    job = distributed.current()
    # After augmentation in the step: the attack sees the images actually trained on.
    step_module = TrainingStep(model, loss_fn, full_precision_loss(loss_fn, precision), adversarial)
    run_step = distributed.data_parallel(step_module, device) if job is not None else step_module
    epoch_seed = distributed.rank_seed(generator) if job is not None else 0
    total_loss, total_correct, seen, adversarial_seen = 0.0, 0, 0, 0
    bar = tqdm(range(0, len(split), batch_size), desc=desc, leave=False, disable=not show_progress(progress),
               unit="batch")
    for step, start in enumerate(bar):
        x, y = split.batch(order[start : start + batch_size])
        if augment is not None:
            x = augment(x, generator)
        step_generator, weight = generator, 1.0
        if job is not None:
            if len(y) < job.world_size:  # a tail too short to give every rank an example is dropped
                continue
            step_generator = distributed.rank_generator(epoch_seed, step)
            weight = len(y[job.rank :: job.world_size]) * job.world_size / len(y)
            x, y = x[job.rank :: job.world_size], y[job.rank :: job.world_size]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # no-ops for resident data
        x = prepare_batch(x, channels_last)
        with autocast_context(precision, device):
            loss, logits, n_adversarial = run_step(x, y, step_generator)
        adversarial_seen += n_adversarial
        value = loss.item()
        finite_logits = bool(torch.isfinite(logits).all())
        if distributed.any_flag(not (math.isfinite(value) and finite_logits), device):  # all ranks stop together
            what = f"loss became {value}" if not math.isfinite(value) else "logits became NaN or infinite"
            raise NonFiniteLossError(f"{desc}: {what} at step {step} of the epoch")
        optimizer.zero_grad(set_to_none=True)
        (loss * weight if weight != 1.0 else loss).backward()
        optimizer.step()

        total_loss += value * len(y)
        total_correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{100 * total_correct / seen:.1f}%")
    total_loss, total_correct, seen, adversarial_seen = distributed.sum_over_ranks(
        [total_loss, total_correct, seen, adversarial_seen], device)
    stats = {"train_loss": total_loss / seen, "train_acc": total_correct / seen}
    if adversarial is not None:
        stats["adv_fraction"] = adversarial_seen / seen
    return stats
