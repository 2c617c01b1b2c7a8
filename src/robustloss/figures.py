"""Matplotlib for every plot robustloss draws (reports and analyses): the headless backend, fixed
colours per name, and files written so that the same data gives the same bytes and a full disk
leaves the previous file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from robustloss.checkpoint import name_the_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colours(names: list[str]) -> dict[str, tuple]:
    """One fixed colour per name (in first-seen order), so a method keeps its colour across panels."""
    cycle = pyplot().get_cmap("tab10").colors
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and close it."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # No software/date metadata: the same data gives byte-identical files. Written under a temporary
        # name and renamed, so a full disk leaves the previous plot rather than half a PNG.
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None})
        os.replace(tmp, path)
    except OSError as err:
        name_the_file(err, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path
