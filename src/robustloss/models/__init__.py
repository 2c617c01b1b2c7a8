"""Model registry. ``create_model(name, num_classes=..., in_channels=..., input_size=...)``."""

from robustloss.models.classifier import Classifier, Normalize
from robustloss.models.registry import MODELS, create_model

# Importing the architecture modules registers them.
from robustloss.models import lenet, small_cnn, vgg, resnet_cifar, shallow_cnn, resnet_v2  # noqa: E402,F401

__all__ = ["Classifier", "Normalize", "MODELS", "create_model"]
