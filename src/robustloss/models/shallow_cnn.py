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
from robustloss.models.vgg import VGGBackbone

BLOCK_CHANNELS = (64, 128, 256)
CONVS_PER_BLOCK = 2
FEATURE_DIM = 256
# In VGGBackbone's notation: two 3x3 convs per block, then a 2x2 max-pool.
CNN8_CONFIG: list[int | str] = [v for c in BLOCK_CHANNELS for v in [c] * CONVS_PER_BLOCK + ["M"]]


def _pooled_side(input_size: int) -> int:
    """Side of the map after the three 2x2 pools (4 at 32x32, 3 at 28x28)."""
    side = input_size // 2 ** len(BLOCK_CHANNELS)
    if side < 1:
        raise ConfigError(f"cnn8 needs input_size >= 8 (e.g. 28 or 32), got {input_size}")
    return side


class ShallowCNNBackbone(nn.Module):
    """The VGG-style conv stack (robustloss.models.vgg's, three blocks) and the 256-unit feature layer."""

    def __init__(self, in_channels: int = 3, input_size: int = 32):
        super().__init__()
        side = _pooled_side(input_size)
        self.conv = VGGBackbone(CNN8_CONFIG, in_channels=in_channels)  # conv-BN-ReLU pairs, pools, flatten
        self.fc = nn.Sequential(nn.Linear(BLOCK_CHANNELS[-1] * side * side, FEATURE_DIM), nn.ReLU(inplace=True))

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
