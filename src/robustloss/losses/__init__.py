"""Loss registry: ``create_loss(name, **params)``; every loss follows ``robustloss.losses.base.Loss``."""

from robustloss.losses.base import Loss
from robustloss.losses.registry import LOSSES, create_loss

# Importing the loss modules registers them.
from robustloss.losses import (  # noqa: E402,F401
    arcface,
    center_loss,
    cross_entropy,
    gce,
    isce,
    label_smoothing,
    lgm,
    mmc,
    pc,
)

__all__ = ["Loss", "LOSSES", "create_loss"]
