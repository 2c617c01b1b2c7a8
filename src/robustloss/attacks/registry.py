from __future__ import annotations

from typing import Any

from robustloss.registry import Registry

ATTACKS: Registry = Registry("attack")


def create_attack(name: str, **params: Any):
    """Build a registered attack; unknown names or parameters fail with the valid ones."""
    return ATTACKS.create(name, **params)
