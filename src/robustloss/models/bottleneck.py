"""``feature_dim=d``: a linear bottleneck that sets the dimension of a model's features z.

To look at a feature space directly, the papers give the network a low-dimensional feature
layer: MMC (Fig. 3b) plots a two-dimensional one on MNIST, I-SCE (Fig. 4) a three-dimensional
embedding before the output layer. ``create_model(name, feature_dim=d)`` does the same for
every architecture: it appends ``Linear(native_dim, d)`` to the backbone, so ``model.features``
returns d values and every loss head (``loss.make_head(model.feature_dim, ...)``) is built on
them.

The layer is linear with no ReLU after it. A ReLU would confine z to the positive orthant: a
2-D plot would show one quadrant, and center-based heads could never reach centers with
negative coordinates (Max-Mahalanobis centers have them).
"""

from __future__ import annotations

import operator

from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.models.classifier import Classifier


class BottleneckBackbone(nn.Module):
    """The architecture's own backbone followed by a linear map to ``feature_dim`` values."""

    def __init__(self, native: nn.Module, native_dim: int, feature_dim: int):
        super().__init__()
        self.native = native
        self.project = nn.Linear(native_dim, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.native(x))


def check_feature_dim(value: object) -> int:
    """``value`` as a positive int; anything else (0, -1, 2.5, "2", True) is a ConfigError."""
    # bool is an int subclass, but feature_dim=True is surely a mistake.
    if isinstance(value, bool):
        raise ConfigError(f"model feature_dim must be a positive integer (e.g. 2 or 3), got {value!r}")
    try:
        dim = operator.index(value)  # ints and numpy ints, not floats or strings
    except TypeError:
        raise ConfigError(f"model feature_dim must be a positive integer (e.g. 2 or 3), got {value!r} "
                          f"({type(value).__name__})") from None
    if dim < 1:
        raise ConfigError(f"model feature_dim must be a positive integer (e.g. 2 or 3), got {dim}")
    return dim


def add_feature_bottleneck(model: Classifier, feature_dim: object) -> Classifier:
    """Give ``model`` ``feature_dim``-dimensional features, in place; returns the model.

    Call it on a freshly built model: the head is replaced by a new linear head on the new
    features, so any head a loss installed before would be lost."""
    dim = check_feature_dim(feature_dim)
    model.backbone = BottleneckBackbone(model.backbone, model.feature_dim, dim)
    model.feature_dim = dim
    model.head = nn.Linear(dim, model.num_classes)
    return model
