"""LeNet-5 as used for MNIST-style experiments in the PC-loss paper.

conv 6@5x5 (pad 2) -> ReLU -> pool 2 -> conv 16@5x5 -> ReLU -> pool 2 -> fc 120 -> ReLU
-> fc 84 -> ReLU. The 84 ReLU outputs are the features z; the final fc 84 -> K is the
Classifier's head, so losses that swap the head (MMC, cosine heads) act on the real z.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.models.classifier import Classifier
from robustloss.models.registry import MODELS

FEATURE_DIM = 84


def _lenet_spatial(input_size: int) -> int:
    """Side of the map entering the first fc layer (5 for 28x28, 6 for 32x32)."""
    side = input_size // 2  # conv1 keeps the size (pad 2), pool halves it
    side = (side - 4) // 2  # conv2 has no padding (-4), pool halves it
    if side < 1:
        raise ConfigError(f"lenet5 needs input_size >= 12 (e.g. 28 or 32), got {input_size}")
    return side


class LeNet5Backbone(nn.Module):
    def __init__(self, in_channels: int = 1, input_size: int = 28):
        super().__init__()
        side = _lenet_spatial(input_size)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, FEATURE_DIM),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))


@MODELS.register("lenet5")
def lenet5(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Classifier:
    backbone = LeNet5Backbone(in_channels=in_channels, input_size=input_size)
    return Classifier(backbone, FEATURE_DIM, num_classes, normalize=normalize)
