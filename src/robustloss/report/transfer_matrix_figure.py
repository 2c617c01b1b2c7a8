"""The transfer matrix's figure: one annotated heat map per crafting attack and eps, substitutes as
rows and targets as columns (MMC Fig. 4's layout), the diagonal (white-box) outlined.

Every panel uses the same 0-100 % colour range, so a colour means the same accuracy in every panel
and the PGD and MIM matrices can be compared at a glance. Matplotlib is loaded by
``robustloss.figures.pyplot`` when a figure is first drawn, so importing this module does not load it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from robustloss.figures import pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from robustloss.report.transfer_matrix import TransferMatrix

COLOUR_MAP = "viridis"
DIAGONAL_COLOUR = "#d62728"  # red: visible on both ends of viridis
DARK_BELOW = 55.0  # viridis is dark below about this accuracy: white numbers there, black above
MAX_PANELS_PER_ROW = 3


def plot_transfer_matrices(matrices: list[TransferMatrix], path: str | Path, *, title: str) -> Path:
    """All the matrices in one PNG: a row of panels per attack, one panel per eps."""
    budgets = list(dict.fromkeys(m.eps for m in matrices))
    ncols = min(len(budgets), MAX_PANELS_PER_ROW) if len(matrices) > 1 else 1
    nrows = math.ceil(len(matrices) / ncols)
    size = max(max(len(m.sources), len(m.targets)) for m in matrices)
    cells = 0.6 * size  # wide enough for "99.9"; the names take the room around them
    plt = pyplot()
    fig = plt.figure(figsize=((cells + 1.9) * ncols + 1.0, (cells + 1.9) * nrows + 0.5), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(matrices))]
    image = None
    for ax, matrix in zip(axes, matrices):
        image = _panel(ax, matrix)
    fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy (%)")
    fig.suptitle(title)
    return save_figure(fig, path)


def _panel(ax: Axes, matrix: TransferMatrix):
    values = matrix.values
    image = ax.imshow(np.ma.masked_invalid(values), cmap=COLOUR_MAP, vmin=0, vmax=100, aspect="equal")
    for (i, j), value in np.ndenumerate(values):
        diagonal = matrix.sources[i] == matrix.targets[j]
        text = "—" if np.isnan(value) else f"{value:.1f}"
        colour = "black" if np.isnan(value) or value >= DARK_BELOW else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour,
                fontstyle="italic" if diagonal else "normal")
        if diagonal:  # the white-box cell: the target attacked through itself
            from matplotlib.patches import Rectangle  # only once pyplot() has loaded matplotlib

            ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor=DIAGONAL_COLOUR,
                                   linewidth=1.8))  # inset, so neighbouring boxes do not merge into a staircase
    ax.set_xticks(range(len(matrix.targets)), matrix.targets, rotation=40, ha="right", rotation_mode="anchor",
                  fontsize=8)
    ax.set_yticks(range(len(matrix.sources)), matrix.sources, fontsize=8)
    ax.set(xlabel="target model", ylabel="substitute model (crafts the examples)", title=matrix.title)
    return image
