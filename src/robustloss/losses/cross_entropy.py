"""Softmax cross-entropy, the baseline every paper compares against (PC paper, Eq. 2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robustloss.losses.base import Loss
from robustloss.losses.registry import LOSSES


@LOSSES.register("ce")
class CrossEntropy(Loss):
    name = "ce"
    attack_objective = "ce"

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        return F.cross_entropy(logits, labels, reduction="none")
