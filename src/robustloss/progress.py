"""When to draw progress bars: on a terminal, or when asked for.

Off a terminal (CI, ``nohup``, a cluster job's log file) a bar is thousands of redraws that bury the
log, so long jobs log one line per finished unit (epoch, attack, cell) instead. ``progress=None``
(the default everywhere) means: the ``ROBUSTLOSS_PROGRESS`` environment variable when it is set
(``1``/``0``, ``true``/``false``, ``on``/``off``), else whether standard error is a terminal.
"""

from __future__ import annotations

import os
import sys

ENVIRONMENT_VARIABLE = "ROBUSTLOSS_PROGRESS"
_ON, _OFF = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def show_progress(requested: bool | None = None) -> bool:
    """Whether to draw progress bars: ``requested`` when given, else the environment, else a terminal."""
    if requested is not None:
        return bool(requested)
    setting = os.environ.get(ENVIRONMENT_VARIABLE)
    if setting is not None:
        value = setting.strip().lower()
        if value in _ON | _OFF:
            return value in _ON
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())
