"""VGG-13 with batch norm, for 32x32 (CIFAR) and 64x64 (Tiny-ImageNet-size) inputs.

The ImageNet VGG ends in three large fc layers sized for 224x224 inputs; for small
images we drop them and take the flattened output of the last max-pool as the features
z (512 values at 32x32 where the map is 1x1, 512*2*2 = 2048 at 64x64). A single linear
head then maps z to logits, which keeps z the input of the (replaceable) head as the
Classifier contract requires.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.models.classifier import Classifier
from robustloss.models.registry import MODELS

# Numbers are conv output channels, "M" a 2x2 max-pool.
VGG13_CONFIG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]

SUPPORTED_SIZES = (32, 64)


def vgg_feature_dim(config: Sequence[int | str], input_size: int, name: str = "vgg") -> int:
    if input_size not in SUPPORTED_SIZES:
        raise ConfigError(f"{name} supports input_size in {SUPPORTED_SIZES}, got {input_size}")
    side = input_size // 2 ** sum(1 for v in config if v == "M")
    last_channels = [v for v in config if v != "M"][-1]
    return int(last_channels) * side * side


class VGGBackbone(nn.Module):
    def __init__(self, config: Sequence[int | str], in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                # bias=False: the following BatchNorm subtracts the mean, so a conv bias
                # would be a redundant parameter.
                layers += [
                    nn.Conv2d(channels, int(v), kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(int(v)),
                    nn.ReLU(inplace=True),
                ]
                channels = int(v)
        self.layers = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init keeps activation variance stable through ReLU layers.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.flatten(self.layers(x))


@MODELS.register("vgg13")
def vgg13(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Classifier:
    feature_dim = vgg_feature_dim(VGG13_CONFIG, input_size, "vgg13")
    backbone = VGGBackbone(VGG13_CONFIG, in_channels=in_channels)
    return Classifier(backbone, feature_dim, num_classes, normalize=normalize)
