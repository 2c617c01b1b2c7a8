"""CIFAR ResNets (He et al. 2016, section 4.2): depth 6n+2 with n basic blocks per stage.

Stem 3x3 conv 16 + BN + ReLU, three stages of n blocks with 16/32/64 channels (the first
block of stages 2 and 3 has stride 2), global average pooling -> 64-d features z, head fc K.

Shortcuts follow the paper's option A: where a block changes shape, the identity path
subsamples by taking every second pixel and zero-pads the new channels. It is
parameter-free, which is what gives the published parameter counts (0.27M for ResNet-20);
a 1x1-conv projection (option B) would be a different model.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.models.classifier import Classifier
from robustloss.models.registry import MODELS

FEATURE_DIM = 64
STAGE_CHANNELS = (16, 32, 64)

NormStats = Optional[tuple[Sequence[float], Sequence[float]]]  # (mean, std) per channel


class PadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsampling plus zero channels appended at the end."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad lists pads from the last dim backwards: (W left, W right, H top, H bottom, C front, C back).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        # bias=False: each conv is followed by BatchNorm, which has its own shift.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetBackbone(nn.Module):
    def __init__(self, blocks_per_stage: int, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STAGE_CHANNELS[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(STAGE_CHANNELS[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = STAGE_CHANNELS[0]
        for i, out_channels in enumerate(STAGE_CHANNELS):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(channels, out_channels, stride)]
            blocks += [BasicBlock(out_channels, out_channels) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init: the paper's initialisation, suited to ReLU networks.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.flatten(self.pool(self.stages(self.stem(x))))


def _check_input_size(name: str, input_size: int) -> None:
    # Two stride-2 stages; sizes divisible by 4 keep every subsampling exact, and global
    # pooling makes the feature size independent of the input size.
    if input_size < 4 or input_size % 4 != 0:
        raise ConfigError(f"{name} supports input sizes divisible by 4 (e.g. 32 or 64), got {input_size}")


def _make_resnet(
    name: str,
    blocks_per_stage: int,
    num_classes: int,
    in_channels: int,
    input_size: int,
    normalize: NormStats,
) -> Classifier:
    _check_input_size(name, input_size)
    backbone = CifarResNetBackbone(blocks_per_stage, in_channels=in_channels)
    return Classifier(backbone, FEATURE_DIM, num_classes, normalize=normalize)


@MODELS.register("resnet20")
def resnet20(
    *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, normalize: NormStats = None
) -> Classifier:
    return _make_resnet("resnet20", 3, num_classes, in_channels, input_size, normalize)


@MODELS.register("resnet32")
def resnet32(
    *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, normalize: NormStats = None
) -> Classifier:
    return _make_resnet("resnet32", 5, num_classes, in_channels, input_size, normalize)


@MODELS.register("resnet56")
def resnet56(
    *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, normalize: NormStats = None
) -> Classifier:
    return _make_resnet("resnet56", 9, num_classes, in_channels, input_size, normalize)


@MODELS.register("resnet110")
def resnet110(
    *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, normalize: NormStats = None
) -> Classifier:
    return _make_resnet("resnet110", 18, num_classes, in_channels, input_size, normalize)
