"""Where datasets live on disk.

One rule everywhere (loader, fetcher, CLI, error messages) so that a file the user was
told to copy somewhere is found there: the explicit ``data_dir`` wins, then the
``ROBUSTLOSS_DATA`` environment variable, then ``~/.cache/robustloss``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "ROBUSTLOSS_DATA"
DEFAULT_DATA_ROOT = "~/.cache/robustloss"

# Repeated in every "not found" / "download failed" message.
ROOT_RULE = f"the data root is --data-dir if given, else ${DATA_ENV_VAR}, else {DEFAULT_DATA_ROOT}"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds all datasets; it is not created here (loading must not write)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR, "")
    if from_env:  # an empty variable means "unset", not "the current directory"
        return Path(from_env).expanduser()
    return Path(DEFAULT_DATA_ROOT).expanduser()
