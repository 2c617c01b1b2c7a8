"""The small 3-layer CNN used as the substitute model for black-box attacks on gray images.

conv 16@5x5 -> ReLU -> conv 32@5x5 -> ReLU -> pool 2 -> conv 64@5x5 -> ReLU -> pool 2
-> fc 100 -> ReLU (features z) -> head fc K. No padding anywhere, so each conv trims 4
pixels: 28 -> 24 -> 20 -> 10 -> 6 -> 3, i.e. 64*3*3 inputs to the fc layer on MNIST.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.models.classifier import Classifier
from robustloss.models.registry import MODELS

FEATURE_DIM = 100


def _cnn3_spatial(input_size: int) -> int:
    """Side of the last pooled map (3 for 28x28, 4 for 32x32)."""
    side = input_size - 4  # conv1
    side = (side - 4) // 2  # conv2 + pool
    side = (side - 4) // 2  # conv3 + pool
    if side < 1:
        raise ConfigError(f"cnn3 needs input_size >= 20 (e.g. 28 or 32), got {input_size}")
    return side


class SmallCNNBackbone(nn.Module):
    def __init__(self, in_channels: int = 1, input_size: int = 28):
        super().__init__()
        side = _cnn3_spatial(input_size)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, FEATURE_DIM),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))


@MODELS.register("cnn3")
def cnn3(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Classifier:
    backbone = SmallCNNBackbone(in_channels=in_channels, input_size=input_size)
    return Classifier(backbone, FEATURE_DIM, num_classes, normalize=normalize)
