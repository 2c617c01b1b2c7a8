"""Atomic writes and safe reads of checkpoints.

Writes go to a temporary file in the same folder, are fsync'ed, then renamed over the
target: a crash leaves either the old file or the new one, never a torn file. Reads use
``torch.load(weights_only=True)``, which refuses to execute pickled code, so a checkpoint
from an untrusted source cannot run anything; checkpoints therefore hold only tensors and
plain Python values (dicts, lists, str, int, float, bool, None).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from robustloss.errors import CheckpointError


def atomic_save(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file or disallowed (pickled code) content
        raise CheckpointError(f"cannot load checkpoint {path}: {err}") from err
