"""Guided Complement Entropy (Chen et al., ICCV 2019, "Improving Adversarial Robustness via
Guided Complement Entropy").

Per sample with softmax probabilities p over K classes and true class g, the complement
distribution is the prediction renormalised over the false classes,

    q_j = p_j / (1 - p_g),   j != g,

and the loss to *minimise* is (the paper's GCE objective of its method section, written per
sample; the equation number was not checked against the paper text)

    GCE = p_g^alpha * sum_{j != g} q_j log q_j / log(K - 1)
        = -p_g^alpha * H(q) / log(K - 1),

which lies in [-1, 0]. Minimising it does two things at once: it maximises the entropy of
the complement distribution (flattening the false classes, the "complement entropy" of
Chen et al.'s earlier COT paper) and, through the guide factor p_g^alpha, it rewards a
confident true class. The sign follows the authors' released code (henry8527/GCE,
``GCE.py``): it computes guide * sum q log q, which is <= 0, and hands that to the optimiser
as the loss. Maximising the guided complement entropy p_g^alpha * H(q), as the paper
describes training, is the same thing.

Normalisation: we divide by log(K - 1), the largest entropy a distribution over the K - 1
false classes can have, so the loss lies in [-1, 0]. The released code divides by log K
instead; the two differ by the constant factor log(K-1)/log K (0.954 for K = 10), i.e.
only in the effective learning rate.

GCE is used *alone*, as a drop-in replacement for cross-entropy: the released MNIST
``main.py`` swaps the criterion for ``GuidedComplementEntropy(alpha)`` when ``--GCE`` is
given (same Adam optimiser, lr 1e-3); unlike COT there is no alternating CE step.

Default: alpha = 1/3, the guide exponent of the paper's experiments (the released
``main.py`` default ``--alpha 0.333``).

Numerics: q is computed as a softmax over the false logits (true logit masked to -inf),
which equals p_j / (1 - p_g) without ever forming 1 - p_g, so nothing is NaN or infinite
when p_g -> 1. The guide factor is exp(alpha * log p_g) from log-softmax.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from robustloss.errors import ConfigError
from robustloss.losses.base import Loss
from robustloss.losses.registry import LOSSES


@LOSSES.register("gce")
class GuidedComplementEntropy(Loss):
    name = "gce"
    # Standard linear head; the trained logits are ordinary softmax logits, so the CE
    # objective fits them (as in the GCE paper's own white-box evaluation).
    attack_objective = "ce"

    def __init__(self, alpha: float = 1.0 / 3.0):
        super().__init__()
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ConfigError(f"gce.alpha (guide exponent) must be a finite number > 0, got {alpha!r}")
        self.alpha = float(alpha)

    def hyperparameters(self) -> dict:
        return {"alpha": self.alpha}

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        num_classes = logits.shape[1]
        if num_classes < 3:
            # With K = 2 the complement distribution has one class: its entropy is always 0
            # and log(K - 1) = 0, so the loss is undefined.
            raise ConfigError(f"gce needs at least 3 classes, got {num_classes}")
        true_mask = F.one_hot(labels, num_classes).bool()

        log_p_true = logits.log_softmax(dim=1).gather(1, labels[:, None]).squeeze(1)
        guide = (self.alpha * log_p_true).exp()  # p_g^alpha

        log_q = logits.masked_fill(true_mask, float("-inf")).log_softmax(dim=1)
        # q_j log q_j with the true class contributing 0 (not 0 * -inf = NaN).
        q_log_q = log_q.exp() * log_q.masked_fill(true_mask, 0.0)
        neg_entropy = q_log_q.sum(dim=1)  # sum_{j != g} q_j log q_j = -H(q) <= 0
        return guide * neg_entropy / math.log(num_classes - 1)
