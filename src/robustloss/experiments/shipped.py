"""The experiment configs that ship inside the package: one YAML per table of the three papers, the
demo, sweeps and our own comparisons, with the papers' published numbers beside them.

They are package data (``robustloss/configs/``), so an installed robustloss runs them by name from
any directory: ``robustloss run pc-table1``. A path still means the user's own file; a name is looked
up only when no such file exists. In a source checkout, the top-level ``configs/`` folder is a link to
the same files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from robustloss.errors import ConfigError

_TITLE = re.compile(r"^title:\s*(.+)$", re.MULTILINE)
_NAME = re.compile(r"^name:\s*(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class ShippedConfig:
    name: str  # the experiment's `name:` (pc-table1)
    title: str
    path: Path


def configs_folder() -> Path:
    """The installed ``robustloss/configs`` folder (a real folder: setuptools installs package data as files)."""
    return Path(str(resources.files("robustloss") / "configs"))


def shipped_configs() -> list[ShippedConfig]:
    """Every shipped experiment, in file-name order."""
    found = []
    for path in sorted(configs_folder().glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        name, title = _NAME.search(text), _TITLE.search(text)
        found.append(ShippedConfig(_scalar(name.group(1)) if name else path.stem.replace("_", "-"),
                                   _scalar(title.group(1)) if title else "", path))
    return found


def _scalar(text: str) -> str:
    """A one-line YAML value (quoted or not) as the string it means."""
    value = yaml.safe_load(text)
    return str(value) if value is not None else ""


def find_experiment(text: str | Path) -> Path:
    """The experiment file ``text`` names: an existing path as given, else a shipped experiment by its
    name (``pc-table1``) or file name (``pc_table1``, ``pc_table1.yaml``)."""
    path = Path(text)
    if path.exists():
        return path
    key = path.name.removesuffix(".yaml").replace("_", "-")
    if path.parent == Path("."):  # a bare name, not a path that does not exist
        for shipped in shipped_configs():
            if key in (shipped.name, shipped.path.stem.replace("_", "-")):
                return shipped.path
    names = ", ".join(s.name for s in shipped_configs())
    raise ConfigError(f"{text}: no such experiment file, and no shipped experiment of that name "
                      f"(`robustloss configs` lists them: {names})")
