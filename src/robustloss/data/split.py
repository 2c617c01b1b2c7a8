"""In-memory image splits: the one data structure every loader returns.

Images stay in their storage dtype (uint8 for every real dataset) so that CIFAR or Tiny
ImageNet fit in memory four times over; ``batch`` converts to float32 in [0, 1] only for
the samples a step needs. ``to(device)`` moves a whole split, e.g. onto the GPU so that a
training step indexes, converts and augments its batch there without a host-to-device copy;
``batch`` then takes indices on that device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ImageSplit:
    images: Tensor  # (N, C, H, W), uint8 in [0, 255] or float32 in [0, 1]
    labels: Tensor  # (N,), int64
    extra_labels: dict[str, Tensor] = field(default_factory=dict)  # e.g. {"coarse": ...}

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be NCHW, got shape {tuple(self.images.shape)}")
        if self.images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"images must be uint8 or float32, got {self.images.dtype}")
        self.labels = self.labels.to(torch.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        """Images as float32 in [0, 1] and int64 labels for the given indices."""
        return to_float(self.images[index]), self.labels[index]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x, y = self.batch(slice(i, i + 1))
        return x[0], int(y[0])

    @property
    def x(self) -> Tensor:
        """All images as float32 in [0, 1] (materialises the whole split)."""
        return to_float(self.images)

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def nbytes(self) -> int:
        """Memory the split's tensors occupy (what moving it to a device costs)."""
        tensors = [self.images, self.labels, *self.extra_labels.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> "ImageSplit":
        """The same split with every tensor on ``device``, in its storage dtype (uint8 stays
        uint8: a quarter of float32's memory); ``self`` when it already is there."""
        if self.images.device == torch.device(device):
            return self
        return ImageSplit(
            self.images.to(device),
            self.labels.to(device),
            {k: v.to(device) for k, v in self.extra_labels.items()},
        )

    def subset(self, index: Tensor | slice) -> "ImageSplit":
        return ImageSplit(
            self.images[index],
            self.labels[index],
            {k: v[index] for k, v in self.extra_labels.items()},
        )


def to_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)
