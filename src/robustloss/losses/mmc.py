"""The Max-Mahalanobis family (Pang et al., "Rethinking softmax cross-entropy loss for
adversarial robustness", ICLR 2020; file 003 in the papers folder).

* ``mmc``   - Eq. (8): L = 1/2 ||z - mu*_y||^2 with fixed Max-Mahalanobis centers mu* of norm
              C_MM (Algorithm 1). Test-time logits are -||z - mu*_k||^2 (nearest center wins).
* ``mmlda`` - Eq. (10): softmax cross-entropy over the logits -1/2 ||z - mu*_k||^2.
* ``emc``   - Eq. (21), Appendix B.3: L = 1/2 ||z - mu_y||^2 + 1/(2 alpha) ||mu_y - mu*_y||^2 with
              trainable centers mu and a Gaussian prior of variance alpha around the MM centers.

Hierarchical MM centers (Appendix B.3) replace mu* when ``groups`` is given: a list of
superclasses, each a list of class indices, or ``"cifar100"`` for CIFAR-100's 20 superclasses.

Defaults and their sources:
* ``norm`` C_MM = 10: "MMC-10", the setting of every MMC table (Sec. 4.1).
* ``embed_dim`` = 256: the 256-d dense layer before the centers in the authors' code; set
  ``embed_dim=None`` to put the centers on the backbone's own penultimate features.
* ``sub_norm`` = 1: the paper only asks C^2 << C^1 for the second level; 1 is a tenth of C_MM.
* ``alpha`` (EMC) = 1: the paper gives no value (the variant is left to future work); alpha = 1
  gives the centers' prior the same unit variance as the features' likelihood z|y ~ N(mu_y, I).

Attacks: MMC's logits are distances, so cross-entropy on them is a poor attack objective (it
saturates and points the wrong way; MMC Sec. 4.2). The adaptive objective ``mmc`` of
Appendix B.4 attacks the distance itself (``robustloss.attacks.objectives``).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.losses.base import Loss
from robustloss.losses.center_heads import CenterDistanceHead
from robustloss.losses.mm_centers import cifar100_superclass_groups, hierarchical_mm_centers, mm_centers
from robustloss.losses.registry import LOSSES

NAMED_HIERARCHIES = {"cifar100": cifar100_superclass_groups}


class _MaxMahalanobisLoss(Loss):
    logit_scale = 1.0  # head logits = -logit_scale * squared distance
    trainable_centers = False

    def __init__(self, norm: float = 10.0, embed_dim: int | None = 256,
                 groups: str | Sequence[Sequence[int]] | None = None, sub_norm: float = 1.0):
        super().__init__()
        if norm <= 0 or sub_norm <= 0:
            raise ConfigError(f"{self.name}: norm and sub_norm must be > 0, got {norm}, {sub_norm}")
        if embed_dim is not None and embed_dim < 1:
            raise ConfigError(f"{self.name}.embed_dim must be a positive integer or null, got {embed_dim}")
        if isinstance(groups, str) and groups not in NAMED_HIERARCHIES:
            raise ConfigError(f"{self.name}.groups: unknown hierarchy {groups!r}; valid: {', '.join(NAMED_HIERARCHIES)}"
                              " or a list of class-index lists")
        self.norm, self.embed_dim, self.groups, self.sub_norm = float(norm), embed_dim, groups, float(sub_norm)

    def hyperparameters(self) -> dict:
        params = {"norm": self.norm, "embed_dim": self.embed_dim}
        if self.groups is not None:
            params |= {"groups": self.groups, "sub_norm": self.sub_norm}
        return params

    def centers(self, dim: int, num_classes: int) -> Tensor:
        if self.groups is None:
            return mm_centers(num_classes, dim, self.norm)
        groups = NAMED_HIERARCHIES[self.groups]() if isinstance(self.groups, str) else self.groups
        covered = sorted(c for g in groups for c in g)
        if covered != list(range(num_classes)):
            raise ConfigError(f"{self.name}.groups must cover classes 0..{num_classes - 1} exactly once")
        return hierarchical_mm_centers(groups, dim, (self.norm, self.sub_norm))

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        dim = self.embed_dim if self.embed_dim is not None else feature_dim
        return CenterDistanceHead(feature_dim, self.centers(dim, num_classes), scale=self.logit_scale,
                                  embed_dim=self.embed_dim, trainable=self.trainable_centers)

    def _half_squared_distance_to_label(self, logits: Tensor, labels: Tensor) -> Tensor:
        # logits = -scale * ||z - mu_k||^2, so 1/2 ||z - mu_y||^2 = -logit_y / (2 scale)
        return -logits.gather(1, labels[:, None]).squeeze(1) / (2 * self.logit_scale)


@LOSSES.register("mmc")
class MaxMahalanobisCenterLoss(_MaxMahalanobisLoss):
    name = "mmc"
    attack_objective = "mmc"

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        return self._half_squared_distance_to_label(logits, labels)


@LOSSES.register("mmlda")
class MaxMahalanobisLDALoss(_MaxMahalanobisLoss):
    name = "mmlda"
    attack_objective = "ce"  # trained and predicted through a softmax over its logits
    logit_scale = 0.5

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        return F.cross_entropy(logits, labels, reduction="none")


@LOSSES.register("emc")
class ElasticMaxMahalanobisCenterLoss(_MaxMahalanobisLoss):
    name = "emc"
    attack_objective = "mmc"
    trainable_centers = True

    def __init__(self, alpha: float = 1.0, norm: float = 10.0, embed_dim: int | None = 256,
                 groups: str | Sequence[Sequence[int]] | None = None, sub_norm: float = 1.0):
        super().__init__(norm=norm, embed_dim=embed_dim, groups=groups, sub_norm=sub_norm)
        if alpha <= 0:
            raise ConfigError(f"emc.alpha (prior variance) must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self._head: tuple[CenterDistanceHead, ...] = ()  # a tuple, so the head's parameters are not ours too

    def hyperparameters(self) -> dict:
        return {"alpha": self.alpha} | super().hyperparameters()

    def bind(self, model: nn.Module) -> None:
        head = model.head
        if not isinstance(head, CenterDistanceHead):
            raise ConfigError("emc needs the center head it builds; train it in a phase of its own")
        self._head = (head,)

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        if not self._head:
            raise RuntimeError("emc: call bind(model) before computing the loss (the trainer does this)")
        head = self._head[0]
        drift = (head.centers[labels] - head.prior_centers[labels]).pow(2).sum(1)
        return self._half_squared_distance_to_label(logits, labels) + drift / (2 * self.alpha)


__all__ = ["MaxMahalanobisCenterLoss", "MaxMahalanobisLDALoss", "ElasticMaxMahalanobisCenterLoss"]
