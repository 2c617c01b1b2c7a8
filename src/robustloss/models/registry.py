from __future__ import annotations

from typing import Any

from robustloss.models.classifier import Classifier
from robustloss.registry import Registry

MODELS: Registry = Registry("model")


def create_model(name: str, **kwargs: Any) -> Classifier:
    """Build a registered model. Common keywords: num_classes, in_channels, input_size, normalize."""
    return MODELS.create(name, **kwargs)
