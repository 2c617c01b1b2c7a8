"""Inference-softmax cross-entropy (I-SCE; file 004 in the papers folder, Eqs. 2-3).

The logits f are L2-normalised (Sec. 3.2: "we normalize f(x) by L2 to increase the numerical
stabilization"). In training the true-class logit becomes s * f_y + m (Eq. 3):

    I-SCE = -log( e^{s f_y + m} / (e^{s f_y + m} + sum_{j != y} e^{f_j}) )

At inference the same transform is applied to the arg-max class (Sec. 3.2), which never
changes the decision (s >= 1, m > 0) but gives the probabilities of Eq. (2).

The head therefore depends on the mode: in training mode it returns the normalised logits
f (the loss adds the margin on the true class); in eval mode - what predictions and attacks
see - it returns f with the arg-max entry transformed.

Defaults s = 1, m = 0.1: "to make fair comparison, we set s = 1 and m = 0.1" (Sec. 4.1).
With s = 1, m = 0 and ``normalize=False`` the loss is plain softmax cross-entropy.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.losses.base import Loss
from robustloss.losses.registry import LOSSES


def _transform_class(logits: Tensor, index: Tensor, s: float, m: float) -> Tensor:
    """logits with entry ``index`` of each row replaced by s * logit + m."""
    mask = F.one_hot(index, logits.shape[1]).to(logits.dtype)
    return logits + mask * ((s - 1) * logits + m)


class InferenceSoftmaxHead(nn.Module):
    attack_objective = "ce"

    def __init__(self, feature_dim: int, num_classes: int, s: float, m: float, normalize: bool):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_classes)
        self.s, self.m, self.normalize = s, m, normalize

    def normalized_logits(self, z: Tensor) -> Tensor:
        logits = self.linear(z)
        return F.normalize(logits, dim=1) if self.normalize else logits

    def forward(self, z: Tensor) -> Tensor:
        logits = self.normalized_logits(z)
        if self.training:
            return logits
        return _transform_class(logits, logits.argmax(dim=1), self.s, self.m)


@LOSSES.register("isce")
class InferenceSoftmaxCrossEntropy(Loss):
    name = "isce"
    attack_objective = "ce"  # eval-mode logits are the paper's inference softmax; CE on them fits

    def __init__(self, s: float = 1.0, m: float = 0.1, normalize: bool = True):
        super().__init__()
        if s < 1:
            raise ConfigError(f"isce.s must be >= 1 (Eq. 3 and the decision-invariance argument), got {s}")
        if m < 0:
            raise ConfigError(f"isce.m must be >= 0, got {m}")
        self.s, self.m, self.normalize = float(s), float(m), bool(normalize)

    def hyperparameters(self) -> dict:
        return {"s": self.s, "m": self.m, "normalize": self.normalize}

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return InferenceSoftmaxHead(feature_dim, num_classes, self.s, self.m, self.normalize)

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        # ``logits`` are the head's training-mode output: normalised, not yet transformed
        return F.cross_entropy(_transform_class(logits, labels, self.s, self.m), labels, reduction="none")
