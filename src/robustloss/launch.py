"""The process entry point of the ``robustloss`` command (the console script and ``python -m robustloss``).

Why it exists: glibc's malloc hands every freed block above its mmap threshold straight back to the
system and trims the heap top often, so PyTorch on CPU, which frees and re-allocates the same activation
and gradient buffers at every step, pays a page fault for every page of them again and again. The demo
took 61 million minor page faults and spent 106 of its 537 CPU seconds in the kernel (cProfile run,
2 cores). ``benchmarks/allocator.py`` (2 epochs of training, then PGD-40 on 1,000 digits, 3 interleaved
rounds, 2 busy cores): faults 0.10x, kernel time 0.16x, PGD wall 0.92x, training 0.99x, results equal.
The thresholds are read once, when the process starts, so the command sets them and replaces itself with
the same command line (``os.execve``, same process id) before anything has imported torch. Values the user
has set are kept; ``ROBUSTLOSS_KEEP_MALLOC=1`` turns the whole thing off. Memory freed by PyTorch then stays
with the process for reuse (its resident size stays at its peak), which is what a training or evaluation
job wants. Other C libraries ignore these variables.
"""

from __future__ import annotations

import os
import sys

# 4 GiB: above any buffer a CPU job allocates, so freed memory is reused instead of returned and refaulted.
ALLOCATOR_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}
OPT_OUT = "ROBUSTLOSS_KEEP_MALLOC"


def allocator_environment(environ: dict[str, str], platform: str = sys.platform) -> dict[str, str] | None:
    """The environment to restart with, or None when nothing needs to change."""
    if not platform.startswith("linux") or environ.get(OPT_OUT):
        return None
    missing = {k: v for k, v in ALLOCATOR_SETTINGS.items() if k not in environ}
    return dict(environ) | missing if missing else None


def restart_command() -> list[str]:
    """This process's own command line, interpreter options included."""
    original = getattr(sys, "orig_argv", None)
    if original:
        return list(original)
    return [sys.executable, "-m", "robustloss", *sys.argv[1:]]


def run() -> None:
    environment = allocator_environment(dict(os.environ))
    if environment is not None and sys.executable:
        try:
            os.execve(sys.executable, restart_command(), environment)
        except OSError:
            pass  # cannot restart here: run as we are, only slower
    from robustloss.cli.main import main

    sys.exit(main())
