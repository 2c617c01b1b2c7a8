"""Heads whose logits are negative squared distances to class centers.

``logits_k = -scale * ||e(z) - mu_k||^2`` where ``e`` is an optional linear embedding of the
backbone features. The MMC paper's released code puts a 256-d dense layer between the
network and the centers; ``embed_dim`` reproduces that, and ``embed_dim=None`` uses the
backbone features directly (their dimension must then suit the centers). A linear embedding
matters for backbones whose features pass through a ReLU (LeNet-5's fc84): non-negative
features could never reach Max-Mahalanobis centers, which have negative coordinates.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


def squared_distances(points: Tensor, centers: Tensor) -> Tensor:
    """||p_i - c_k||^2 for all pairs, (N, d) x (K, d) -> (N, K), by expansion (no sqrt, so the
    gradient is finite even at zero distance)."""
    return (points.pow(2).sum(1, keepdim=True) - 2 * points @ centers.T + centers.pow(2).sum(1)).clamp_min(0)


class CenterDistanceHead(nn.Module):
    attack_objective: ClassVar[str] = "mmc"

    def __init__(self, feature_dim: int, centers: Tensor, *, scale: float = 1.0, embed_dim: int | None = None,
                 trainable: bool = False):
        super().__init__()
        if embed_dim is not None and centers.shape[1] != embed_dim:
            raise ValueError(f"centers have dimension {centers.shape[1]} but embed_dim={embed_dim}")
        if embed_dim is None and centers.shape[1] != feature_dim:
            raise ValueError(f"centers have dimension {centers.shape[1]} but the features have {feature_dim}")
        self.scale = float(scale)
        self.embed: nn.Module = nn.Linear(feature_dim, embed_dim) if embed_dim is not None else nn.Identity()
        centers = centers.to(torch.float32)
        self.register_buffer("prior_centers", centers.clone())  # the fixed (MM) centers
        if trainable:
            self.centers = nn.Parameter(centers.clone())  # EMC: free centers, pulled towards the prior
        else:
            self.register_buffer("centers", centers.clone())

    def embedding(self, z: Tensor) -> Tensor:
        """The space the centers live in (what center-based figures plot)."""
        return self.embed(z)

    def forward(self, z: Tensor) -> Tensor:
        return -self.scale * squared_distances(self.embed(z), self.centers)
