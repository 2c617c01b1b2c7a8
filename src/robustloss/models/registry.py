from __future__ import annotations

from typing import Any

from robustloss.errors import ConfigError
from robustloss.models.bottleneck import add_feature_bottleneck
from robustloss.models.classifier import Classifier
from robustloss.registry import Registry

MODELS: Registry = Registry("model")

# Options that create_model handles itself for every architecture, so no factory declares them.
COMMON_MODEL_PARAMETERS = ("feature_dim",)


def create_model(name: str, *, feature_dim: int | None = None, **kwargs: Any) -> Classifier:
    """Build a registered model. Common keywords: num_classes, in_channels, input_size, normalize.

    ``feature_dim=d`` appends a linear bottleneck to d features (``robustloss.models.bottleneck``);
    None keeps the architecture's native penultimate features."""
    unknown = sorted(set(kwargs) - set(MODELS.parameters(name)))
    if unknown:
        # Checked here rather than left to MODELS.create so the list of valid names includes feature_dim.
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for model {name!r}; "
                          f"valid parameters: {', '.join(model_parameters(name))}")
    model = MODELS.create(name, **kwargs)
    if feature_dim is not None:
        add_feature_bottleneck(model, feature_dim)
    return model


def model_parameters(name: str) -> list[str]:
    """Every keyword ``create_model(name, ...)`` accepts: the factory's own plus the common ones."""
    return MODELS.parameters(name) + list(COMMON_MODEL_PARAMETERS)
