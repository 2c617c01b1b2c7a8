"""Where datasets live on disk.

One rule everywhere (loader, fetcher, CLI, error messages) so that a file the user was
told to copy somewhere is found there: the explicit ``data_dir`` wins, then the
``ROBUSTLOSS_DATA`` environment variable, then ``~/.cache/robustloss``.

After that root, the loaders also look in the system's dataset folders (Debian installs
packaged datasets under ``/usr/share/datasets/<name>/``, e.g. ``apt-get install
dataset-fashion-mnist``), so a dataset installed by the package manager needs no copy.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "ROBUSTLOSS_DATA"
DEFAULT_DATA_ROOT = "~/.cache/robustloss"

SYSTEM_DATA_ENV_VAR = "ROBUSTLOSS_SYSTEM_DATA"  # colon-separated; tests point it at a temporary folder
DEFAULT_SYSTEM_DATA = "/usr/share/datasets"

# Datasets a Debian package installs into DEFAULT_SYSTEM_DATA/<name>/, in the standard format.
DEBIAN_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}

# Repeated in every "not found" / "download failed" message.
ROOT_RULE = (f"the data root is --data-dir if given, else ${DATA_ENV_VAR}, else {DEFAULT_DATA_ROOT}; "
             f"after it, {DEFAULT_SYSTEM_DATA}/<name>/ is searched (${SYSTEM_DATA_ENV_VAR} changes that folder)")


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds all datasets; it is not created here (loading must not write)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR, "")
    if from_env:  # an empty variable means "unset", not "the current directory"
        return Path(from_env).expanduser()
    return Path(DEFAULT_DATA_ROOT).expanduser()


def system_data_roots() -> list[Path]:
    """Folders where the system's package manager puts datasets, searched after the data root."""
    value = os.environ.get(SYSTEM_DATA_ENV_VAR)
    value = DEFAULT_SYSTEM_DATA if value is None else value
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part]
