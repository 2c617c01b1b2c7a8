"""Pre-activation CIFAR ResNets ("ResNet-v2", He et al. 2016, "Identity mappings in deep
residual networks"), the family the MMC authors' released code trains (``--version=2``).

Layout: stem conv 3x3 16 -> BN -> ReLU, three stages at widths 16 / 32 / 64 (the first block of
stages 2 and 3 has stride 2), final BN -> ReLU -> global average pooling -> optional dense
layer (``dense_dim``, default 256) = features z -> head fc K.

Blocks (``block=``):

* ``"bottleneck"`` (default, as in the MMC code): BN-ReLU-conv1x1(w) -> BN-ReLU-conv3x3(w) ->
  BN-ReLU-conv1x1(4w); stage outputs 64 / 128 / 256, 9n+2 weighted layers for n blocks a stage.
* ``"basic"``: BN-ReLU-conv3x3(w) -> BN-ReLU-conv3x3(w); stage outputs 16 / 32 / 64, 6n+2 layers.

Naming follows the MMC paper and code, not the layer count: "ResNet-32 with five core layer
blocks" and "ResNet-110 with eighteen core block layers" fix n = 5 and n = 18 blocks a stage,
and the authors' "Resnet-32v2" is n = 5 with bottleneck blocks (their train.py: ``n = 5``,
``depth = n * 9 + 2`` = 47). So ``resnet32v2`` / ``resnet110v2`` mean 5 / 18 blocks a stage:
47 / 164 layers with bottlenecks, literally 32 / 110 layers with basic blocks (the latter two are
He et al.'s pre-activation ResNet-110 and the bottleneck one is their ResNet-164, both ~1.7M
parameters). ``resnetv2`` takes the true ``depth`` instead and rejects depths that are not
6n+2 (basic) or 9n+2 (bottleneck).

Choices where the MMC code (Keras) and He et al.'s code differ, we follow He et al.:
bottleneck widths are 16 / 32 / 64 (the Keras code widens stages 2-3 to 64 / 128), the stride
sits on the 3x3 conv (Keras: on the first 1x1), and a projection shortcut reads the
pre-activated input (Keras: the raw sum). Shortcuts are 1x1 conv projections where the shape
changes, identities elsewhere, as in both codes.

The dense layer is linear, as in the MMC code (``Dense(256)`` with no activation): a ReLU would
keep z in the positive orthant, where Max-Mahalanobis centers (negative coordinates) are
unreachable when a center head sits directly on z.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.models.classifier import Classifier
from robustloss.models.registry import MODELS

STAGE_WIDTHS = (16, 32, 64)
BOTTLENECK_EXPANSION = 4
DEFAULT_DENSE_DIM = 256

NormStats = Optional[tuple[Sequence[float], Sequence[float]]]  # (mean, std) per channel


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    # bias=False: every conv output meets a BatchNorm (in this block or the next) before a ReLU.
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)


class PreActBlock(nn.Module):
    """out = residual(BN-ReLU(x)) + shortcut. The identity shortcut carries the raw x (the
    "clean" path of pre-activation nets); a projection reads the pre-activated x, as in He et
    al.'s code, so the very first block can skip the pre-activation the stem already applied."""

    def __init__(self, residual: nn.Module, in_channels: int, out_channels: int, stride: int,
                 preactivate: bool):
        super().__init__()
        self.preact: nn.Module = _bn_relu(in_channels) if preactivate else nn.Identity()
        self.residual = residual
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = _conv(in_channels, out_channels, 1, stride)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.preact(x)
        shortcut = x if self.projection is None else self.projection(activated)
        return self.residual(activated) + shortcut


def basic_block(in_channels: int, width: int, stride: int, preactivate: bool) -> PreActBlock:
    residual = nn.Sequential(_conv(in_channels, width, 3, stride), _bn_relu(width), _conv(width, width, 3))
    return PreActBlock(residual, in_channels, width, stride, preactivate)


def bottleneck_block(in_channels: int, width: int, stride: int, preactivate: bool) -> PreActBlock:
    out_channels = width * BOTTLENECK_EXPANSION
    residual = nn.Sequential(
        _conv(in_channels, width, 1), _bn_relu(width),
        _conv(width, width, 3, stride), _bn_relu(width),
        _conv(width, out_channels, 1),
    )
    return PreActBlock(residual, in_channels, out_channels, stride, preactivate)


# block name -> (builder, output channels per unit width, weighted layers per block)
BLOCKS = {
    "basic": (basic_block, 1, 2),
    "bottleneck": (bottleneck_block, BOTTLENECK_EXPANSION, 3),
}


def _check_block(block: str) -> None:
    if block not in BLOCKS:
        raise ConfigError(f"resnet v2 block must be one of {', '.join(BLOCKS)}, got {block!r}")


def blocks_per_stage(depth: int, block: str) -> int:
    """n for a network of ``depth`` weighted layers: depth = (layers per block) * 3n + 2."""
    _check_block(block)
    per_stage_layers = 3 * BLOCKS[block][2]
    n, remainder = divmod(depth - 2, per_stage_layers)
    if n < 1 or remainder:
        valid = ", ".join(str(per_stage_layers * k + 2) for k in range(1, 5))
        raise ConfigError(f"resnet v2 with {block} blocks needs depth = {per_stage_layers}n + 2 "
                          f"(e.g. {valid}, ...), got {depth}")
    return n


class PreActResNetBackbone(nn.Module):
    def __init__(self, n_blocks: int, block: str = "bottleneck", in_channels: int = 3,
                 dense_dim: int | None = DEFAULT_DENSE_DIM):
        super().__init__()
        _check_block(block)
        make_block, expansion, _ = BLOCKS[block]
        # The stem is conv-BN-ReLU, so the first block needs no pre-activation of its own.
        self.stem = nn.Sequential(_conv(in_channels, STAGE_WIDTHS[0], 3), _bn_relu(STAGE_WIDTHS[0]))
        stages: list[nn.Module] = []
        channels = STAGE_WIDTHS[0]
        for i, width in enumerate(STAGE_WIDTHS):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(make_block(channels, width, stride, preactivate=(i, j) != (0, 0)))
                channels = width * expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # Pre-activation blocks end in a bare sum: normalise and rectify once before pooling.
        self.final = _bn_relu(channels)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.pooled_dim = channels
        self.dense: nn.Module = nn.Linear(channels, dense_dim) if dense_dim is not None else nn.Identity()
        self.feature_dim = dense_dim if dense_dim is not None else channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init, the papers' initialisation for ReLU networks.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(self.pool(self.final(self.stages(self.stem(x)))))


def _check_dense_dim(dense_dim: object) -> None:
    if dense_dim is not None and (isinstance(dense_dim, bool) or not isinstance(dense_dim, int) or dense_dim < 1):
        raise ConfigError(f"resnet v2 dense_dim must be a positive integer or None, got {dense_dim!r}")


def _make(n_blocks: int, block: str, num_classes: int, in_channels: int, input_size: int,
          normalize: NormStats, dense_dim: int | None) -> Classifier:
    _check_dense_dim(dense_dim)
    # Global pooling makes the features independent of the input size; the two stride-2
    # stages only need something left to pool.
    if input_size < 4:
        raise ConfigError(f"resnet v2 needs input_size >= 4 (e.g. 32 or 64), got {input_size}")
    backbone = PreActResNetBackbone(n_blocks, block, in_channels, dense_dim)
    return Classifier(backbone, backbone.feature_dim, num_classes, normalize=normalize)


@MODELS.register("resnet32v2")
def resnet32v2(
    *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, normalize: NormStats = None,
    block: str = "bottleneck", dense_dim: int | None = DEFAULT_DENSE_DIM,
) -> Classifier:
    """The MMC authors' "Resnet-32v2": 5 blocks a stage (47 layers with bottlenecks)."""
    _check_block(block)
    return _make(5, block, num_classes, in_channels, input_size, normalize, dense_dim)


@MODELS.register("resnet110v2")
def resnet110v2(
    *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, normalize: NormStats = None,
    block: str = "bottleneck", dense_dim: int | None = DEFAULT_DENSE_DIM,
) -> Classifier:
    """The MMC paper's ResNet-110 in v2 form: 18 blocks a stage (164 layers with bottlenecks)."""
    _check_block(block)
    return _make(18, block, num_classes, in_channels, input_size, normalize, dense_dim)


@MODELS.register("resnetv2")
def resnetv2(
    *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, normalize: NormStats = None,
    depth: int = 47, block: str = "bottleneck", dense_dim: int | None = DEFAULT_DENSE_DIM,
) -> Classifier:
    """Any valid depth by its true layer count; the default 47 is the MMC code's network."""
    return _make(blocks_per_stage(depth, block), block, num_classes, in_channels, input_size, normalize,
                 dense_dim)
