"""Label smoothing (Szegedy et al., CVPR 2016, "Rethinking the Inception Architecture for
Computer Vision", Sec. 7 "Model Regularization via Label Smoothing").

The one-hot target is mixed with the uniform distribution u(k) = 1/K,

    q'(k) = (1 - eps) * 1[k = y] + eps / K,

and the loss is the cross-entropy against q' (Sec. 7):

    H(q', p) = -sum_k q'(k) log p_k = (1 - eps) * CE(p, y) + eps * (-1/K sum_k log p_k).

The second term keeps every log-probability finite, so the true-class logit cannot run
away from the others; that is the regularisation Szegedy et al. are after.

Default: eps = 0.1, the value of the paper's ImageNet experiments (Sec. 7, "we used
u(k) = 1/1000 and eps = 0.1"). eps = 0 is plain cross-entropy.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from robustloss.errors import ConfigError
from robustloss.losses.base import Loss
from robustloss.losses.registry import LOSSES


@LOSSES.register("label_smoothing")
class LabelSmoothing(Loss):
    name = "label_smoothing"
    attack_objective = "ce"  # standard linear head with softmax logits

    def __init__(self, eps: float = 0.1):
        super().__init__()
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 <= eps < 1):
            # eps = 1 would make the target uniform and ignore the labels altogether.
            raise ConfigError(f"label_smoothing.eps must be in [0, 1), got {eps!r}")
        self.eps = float(eps)

    def hyperparameters(self) -> dict:
        return {"eps": self.eps}

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        log_p = logits.log_softmax(dim=1)
        nll = F.nll_loss(log_p, labels, reduction="none")  # -log p_y
        uniform_ce = -log_p.mean(dim=1)  # -1/K sum_k log p_k
        return (1.0 - self.eps) * nll + self.eps * uniform_ce
