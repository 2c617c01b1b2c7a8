from __future__ import annotations

from typing import Any

from robustloss.losses.base import Loss
from robustloss.registry import Registry

LOSSES: Registry = Registry("loss")


def create_loss(name: str, **params: Any) -> Loss:
    """Build a registered loss; unknown names or parameters fail with the valid ones."""
    return LOSSES.create(name, **params)
