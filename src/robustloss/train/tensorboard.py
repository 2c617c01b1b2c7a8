"""Optional TensorBoard logging of each epoch's scalars.

``tensorboard`` is an optional extra (``pip install tensorboard``), so training must never
depend on it: without it the writer logs one line saying logging is skipped and then does
nothing. Scalars are written with the 1-based epoch as the step, so a resumed run continues
the same curves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

_log = logging.getLogger(__name__)

# Columns of a metrics row worth plotting (adv_fraction only exists in adversarial runs).
SCALARS = ("train_loss", "train_acc", "test_acc", "lr", "seconds", "adv_fraction")


class ScalarWriter:
    """Writes metrics rows to a ``SummaryWriter``, or nothing when ``summary`` is None."""

    def __init__(self, summary: Any | None = None):
        self.summary = summary

    @property
    def active(self) -> bool:
        return self.summary is not None

    def write(self, row: dict) -> None:
        if self.summary is None:
            return
        for key in SCALARS:
            if key in row:
                self.summary.add_scalar(key, float(row[key]), global_step=int(row["epoch"]))
        self.summary.flush()  # a killed run still leaves its curves up to the last epoch

    def close(self) -> None:
        if self.summary is not None:
            self.summary.close()
            self.summary = None

    def __enter__(self) -> ScalarWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_scalar_writer(log_dir: str | Path | None, log: Callable[[str], None] = _log.info) -> ScalarWriter:
    """A writer into ``log_dir``; inactive when ``log_dir`` is None or TensorBoard is missing."""
    if log_dir is None:
        return ScalarWriter()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError when the tensorboard package is absent
        log(f"tensorboard logging to {log_dir} skipped: the tensorboard package is not installed "
            f"(pip install tensorboard)")
        return ScalarWriter()
    return ScalarWriter(SummaryWriter(log_dir=str(log_dir)))
