"""The model contract: input normalisation -> backbone (x -> features z) -> head (z -> logits).

Every model takes images in [0, 1]; normalisation lives inside the model so attacks,
budgets and clipping are always expressed in pixel space. The head is a separate
module because some losses (MMC centers, cosine heads, normalised logits) replace it:
the saved model then carries the loss's head and attacks see the real decision function.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, stored as buffers so it travels with the weights."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    ):
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.normalize: nn.Module = Normalize(*normalize) if normalize else nn.Identity()
        self.backbone = backbone
        self.head: nn.Module = nn.Linear(feature_dim, num_classes)
        self.trained_with: str | None = None  # name of the training loss, once known

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features z (what t-SNE plots and center-based losses use)."""
        return self.backbone(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and features from one pass (losses that need z avoid a second forward)."""
        z = self.features(x)
        return self.head(z), z

    def replace_head(self, head: nn.Module) -> None:
        self.head = head
