"""Expectation over Transformation (EOT, Athalye et al. 2018) for attacks on randomised models.

A randomised defence (``robustloss.defenses``) draws new randomness on every forward pass. An attack
that follows one pass per step follows the noise of that draw; EOT averages ``eot`` passes instead,
so the attack climbs the expected objective, which is what the defence's decision really depends on.

Two quantities are averaged:

- the input gradient of the objective (the step direction);
- the class probabilities, returned as ``log(mean softmax)``: a valid logit vector whose argmax is the
  expected prediction. Success (early stopping, keeping the best iterate) is judged on it, so an attack
  does not stop on an iterate that fooled one lucky draw but not the defence on average.

``eot = 1`` returns the single pass's own logits and gradient untouched: every attack stays
bit-identical to its plain version, and records and cache keys carry ``eot`` only when it is not 1.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn


def check_eot(attack_name: str, eot) -> int:
    """``eot`` as an int, or a clear error."""
    if int(eot) != eot or eot < 1:
        raise ValueError(f"{attack_name}: eot (forward/backward passes averaged per step) must be an integer >= 1, "
                         f"got {eot}")
    return int(eot)


def eot_hyperparameter(eot: int) -> dict:
    """``{"eot": eot}`` only when EOT is on, so records and cache keys of plain attacks stay unchanged."""
    return {"eot": eot} if eot != 1 else {}


def mean_logits(logits: list[Tensor]) -> Tensor:
    """log of the mean softmax over passes (the first pass's logits when there is one pass)."""
    if len(logits) == 1:
        return logits[0]
    stacked = torch.stack([l.float().log_softmax(dim=1) for l in logits])
    return torch.logsumexp(stacked, dim=0) - math.log(len(logits))


def eot_gradient(model: nn.Module, x: Tensor, loss: Callable[[Tensor], Tensor], eot: int
                 ) -> tuple[Tensor, Tensor]:
    """(logits, input gradient of ``loss(logits).sum()``), both averaged over ``eot`` passes of ``model`` at ``x``.

    One pass at a time (a loop, not one big batch), so memory stays that of a single pass."""
    x = x.detach().requires_grad_(True)
    first = model(x)
    (grad,) = torch.autograd.grad(loss(first).sum(), x)
    if eot == 1:
        return first, grad
    passes = [first.detach()]
    for _ in range(eot - 1):
        logits = model(x)
        (more,) = torch.autograd.grad(loss(logits).sum(), x)
        grad = grad + more
        passes.append(logits.detach())
    return mean_logits(passes), grad / eot


@torch.no_grad()
def eot_logits(model: nn.Module, x: Tensor, eot: int) -> Tensor:
    """Logits averaged over ``eot`` forward passes (``mean_logits``), without gradients."""
    return mean_logits([model(x) for _ in range(eot)])
