"""``cnn8``: the shallow "8-layer" CIFAR-10 network of the I-SCE paper's appendix.

The I-SCE paper (appendix, "shallow networks") names "an 8-layer neural network for CIFAR10"
but gives none of its layers, so this is our reading, a standard VGG-style one:

    3 blocks of [conv 3x3 -> BN -> ReLU] x 2 at 64 / 128 / 256 channels, 2x2 max-pool after
    each block                                                          (6 conv layers)
    flatten (256 * 4 * 4 = 4096 at 32x32) -> fc 256 -> ReLU = features z   (7th layer)
    head fc 256 -> K                                                        (8th layer)

Why this reading: "8 layers" conventionally counts the weighted layers (convs and fcs, not
BN / pooling), and the doubling 64-128-256 widths with pairs of 3x3 convs are the VGG pattern
the repository's vgg13 already uses, scaled down to be shallow. The last hidden fc is the
feature layer, as in lenet5 and cnn3, so the replaceable head is exactly the 8th layer.
Convs are padded (the map only shrinks at the pools), so any input_size >= 8 works: the
flattened map is 256 * (input_size // 8)^2.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.models.classifier import Classifier
from robustloss.models.registry import MODELS

BLOCK_CHANNELS = (64, 128, 256)
CONVS_PER_BLOCK = 2
FEATURE_DIM = 256


def _pooled_side(input_size: int) -> int:
    """Side of the map after the three 2x2 pools (4 at 32x32, 3 at 28x28)."""
    side = input_size // 2 ** len(BLOCK_CHANNELS)
    if side < 1:
        raise ConfigError(f"cnn8 needs input_size >= 8 (e.g. 28 or 32), got {input_size}")
    return side


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(CONVS_PER_BLOCK):
        # bias=False: BatchNorm follows and has its own shift.
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ShallowCNNBackbone(nn.Module):
    def __init__(self, in_channels: int = 3, input_size: int = 32):
        super().__init__()
        side = _pooled_side(input_size)
        blocks: list[nn.Module] = []
        channels = in_channels
        for out_channels in BLOCK_CHANNELS:
            blocks.append(_conv_block(channels, out_channels))
            channels = out_channels
        self.conv = nn.Sequential(*blocks)
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, FEATURE_DIM),
            nn.ReLU(inplace=True),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init keeps activation variance stable through ReLU layers.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))


@MODELS.register("cnn8")
def cnn8(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Classifier:
    backbone = ShallowCNNBackbone(in_channels=in_channels, input_size=input_size)
    return Classifier(backbone, FEATURE_DIM, num_classes, normalize=normalize)
