"""Named parameter sets from the papers, e.g. ``cw-pc-100`` = the PC paper's C&W setting.

A preset is (attack name, parameters without eps, where it comes from). Attack modules
register their papers' settings next to the attack; ``preset(name)`` returns them, and the
evaluation plan accepts a preset name wherever an attack name is expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustloss.registry import Registry


@dataclass(frozen=True)
class Preset:
    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # paper, section/table


PRESETS: Registry = Registry("attack preset")


def register_preset(name: str, attack: str, source: str, **params: Any) -> Preset:
    preset = Preset(attack, params, source)
    PRESETS.register(name)(preset)
    return preset


def preset(name: str) -> Preset:
    return PRESETS.get(name)


# The PC paper's white-box settings (Results section): BIM 10 iterations, PGD and MIM 40, step 0.01.
register_preset("bim-pc", "bim", "PC paper, Results: 10 iterations, step 0.01", steps=10, step_size=0.01)
register_preset("pgd-pc", "pgd", "PC paper, Results: 40 iterations, step 0.01", steps=40, step_size=0.01)
register_preset("mim-pc", "mim", "PC paper, Results: 40 iterations, step 0.01, decay 1.0", steps=40,
                step_size=0.01, decay=1.0)
