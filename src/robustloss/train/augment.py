"""Batch-level augmentation on tensors (no per-sample Python loop, no DataLoader workers).

Random crop with zero padding and horizontal flip, the standard CIFAR/SVHN recipe
(He et al. 2016), drawn from the run's own generator so training stays reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :] + shifts[0][:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] + shifts[1][:, None]  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mirrored = torch.rand(n, generator=generator).to(x.device) < 0.5
        out = torch.where(mirrored[:, None, None, None], out.flip(3), out)
    return out


def random_crop(x: Tensor, generator: torch.Generator) -> Tensor:
    """Crop without flip, for data where mirroring changes meaning (digits, text)."""
    return random_crop_flip(x, generator, flip=False)


def augmentation_for(mode: str, color: bool):
    """The batch transform for a config's ``augment`` value, or None.

    ``auto`` follows the papers: random crop + flip for colour datasets, nothing for gray ones.
    """
    if mode == "crop-flip" or (mode == "auto" and color):
        return random_crop_flip
    if mode == "crop":
        return random_crop
    return None
