"""The command line's console: library log records printed as today's readable lines.

The library logs under the ``robustloss`` logger and never prints; the CLI attaches one handler that
writes INFO records as plain lines to standard output and warnings to standard error. The streams
are looked up at each record, so a redirected ``sys.stdout`` (a torchrun rank other than 0, a test's
capture) is honoured.
"""

from __future__ import annotations

import logging
import sys


class ConsoleHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                print(f"warning: {message}", file=sys.stderr, flush=True)
            else:
                print(message, file=sys.stdout, flush=True)
        except Exception:  # logging must never take the command down (a closed pipe, say)
            self.handleError(record)


def attach_console(level: int = logging.INFO) -> None:
    """Route the ``robustloss`` logger to the console, once per process (``main`` may run many times)."""
    logger = logging.getLogger("robustloss")
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
