"""Stable identities for configs: the hash that names a run in the store, and which axes are seeds.

These are pure functions of a config's values. They live apart from the blocks because the
blocks, the checks and the runner all need them, and none of them needs anything else here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from robustloss.config import to_dict


def canonical(config: Any) -> Any:
    """``to_dict`` without the keys left at their defaults, so adding a new option with a default
    later does not change the hash of every existing run."""
    data = to_dict(config)
    defaults = to_dict(type(config)()) if _has_defaults(type(config)) else {}
    return {k: v for k, v in data.items() if k not in defaults or defaults[k] != v}


def _has_defaults(cls: type) -> bool:
    try:
        cls()
    except TypeError:
        return False
    return True


def seed_axes(axes: list[str]) -> list[str]:
    """Axes averaged over (mean ± std): any axis named like a seed."""
    return [a for a in axes if a == "seed" or a.endswith(".seed")]


def config_hash(config: Any) -> str:
    data = config if isinstance(config, dict) else canonical(config)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
