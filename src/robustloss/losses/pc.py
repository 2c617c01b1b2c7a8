"""Probabilistically Compact loss with logit constraints (Li, Li, Pan & Zhu, AAAI 2021).

Paper form (``variant="paper"``), per sample with softmax probabilities f and logits a:

    PC term, Eq. (6):            sum_{k != y} max(0, f_k + xi - f_y)
    logit constraint, Eq. (16):  lam * max(0, a_y - a_j),   j = argmax_{k != y} a_k

Both are averaged over the batch. Eq. (16) also subtracts a constant C'; it has no gradient
and is dropped. The PC term pushes f_y above every false probability by the margin xi; the
constraint keeps the true-vs-runner-up logit gap small so the probability gap cannot be
crossed by a small input change (the paper's argument, Eqs. 8-15).

Released-code form (``variant="released"``), as in the authors' public implementation:
  * the PC term is divided by K - 1;
  * the logit constraint weights every false class k by w_k = softmax over the false logits
    (true logit masked out) and sums w_k * max(0, a_y - a_k). The weights are *not*
    detached, so gradient also flows through the soft selection of the runner-up class.

Defaults xi = 0.995 and lam = 0.05 are the paper's (Experiments section, all datasets).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from robustloss.errors import ConfigError
from robustloss.losses.base import Loss
from robustloss.losses.registry import LOSSES


@LOSSES.register("pc")
class ProbabilisticallyCompactLoss(Loss):
    name = "pc"
    attack_objective = "ce"  # the head is the standard linear one, so CE gradients fit it

    def __init__(self, xi: float = 0.995, lam: float = 0.05, variant: Literal["paper", "released"] = "paper"):
        super().__init__()
        if not 0 < xi <= 1:
            raise ConfigError(f"pc.xi must be in (0, 1], got {xi}")
        if lam < 0:
            raise ConfigError(f"pc.lam must be >= 0, got {lam}")
        if variant not in ("paper", "released"):
            raise ConfigError(f"pc.variant must be 'paper' or 'released', got {variant!r}")
        self.xi, self.lam, self.variant = float(xi), float(lam), variant

    def hyperparameters(self) -> dict:
        return {"xi": self.xi, "lam": self.lam, "variant": self.variant}

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        num_classes = logits.shape[1]
        true_mask = torch.nn.functional.one_hot(labels, num_classes).bool()
        probs = logits.softmax(dim=1)
        p_true = probs.gather(1, labels[:, None])
        hinge = (probs + self.xi - p_true).clamp_min(0).masked_fill(true_mask, 0.0)
        pc_term = hinge.sum(dim=1)

        a_true = logits.gather(1, labels[:, None])
        logit_gaps = (a_true - logits).clamp_min(0)  # max(0, a_y - a_k) for every k
        false_logits = logits.masked_fill(true_mask, float("-inf"))
        if self.variant == "paper":
            runner_up = false_logits.argmax(dim=1, keepdim=True)
            constraint = logit_gaps.gather(1, runner_up).squeeze(1)
        else:
            weights = false_logits.softmax(dim=1)  # exactly 0 on the true class
            constraint = (weights * logit_gaps).sum(dim=1)
            pc_term = pc_term / (num_classes - 1)
        return pc_term + self.lam * constraint
