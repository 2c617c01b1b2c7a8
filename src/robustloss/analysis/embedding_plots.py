"""PNG of t-SNE feature embeddings: one panel per run, clean samples as dots coloured by class,
successful adversarial examples as '+' (the PC paper's marker, Fig. 3b/d); optionally each run's
clean samples alone beside it (Fig. 3a/c).

An adversarial '+' has the colour of its *true* class, so a '+' of one colour inside another
colour's cluster shows an example that the attack carried into the adversarial class's region.
``adversarial_colour="predicted"`` colours it by the adversarial class instead.
"""

from __future__ import annotations

import itertools
import string
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from robustloss.analysis.embedding import FeatureEmbedding
from robustloss.figures import pyplot, save_figure

LEGEND_MAX_CLASSES = 20  # more classes than this (CIFAR-100) make a legend that hides the plot


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 4) RGBA: tab10 / tab20 where they suffice, an evenly spaced spectrum beyond."""
    plt = pyplot()
    if num_classes <= 10:
        return np.asarray(plt.get_cmap("tab10").colors)[:num_classes]
    if num_classes <= 20:
        return np.asarray(plt.get_cmap("tab20").colors)[:num_classes]
    return plt.get_cmap("nipy_spectral")(np.linspace(0.05, 0.95, num_classes))


def class_legend_handles(num_classes: int, class_names: Sequence[str] | None = None) -> list:
    from matplotlib.lines import Line2D

    colours = class_colours(num_classes)
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    return [Line2D([], [], marker="o", linestyle="", color=colours[k], markersize=6, label=names[k])
            for k in range(num_classes)]


def plot_embeddings(
    embeddings: dict[str, FeatureEmbedding],
    path: str | Path,
    *,
    title: str = "",
    class_names: Sequence[str] | None = None,
    adversarial_colour: Literal["true", "predicted"] = "true",
    clean_panels: bool = False,
) -> Path:
    """One t-SNE panel per run (dict key = panel title); returns the written PNG path.

    ``clean_panels``: the PC paper's Fig. 3 layout, one row per run: (a) its clean samples alone,
    (b) the same embedding with the successful adversarial examples added. Both panels of a run
    show the same joint coordinates, so a clean point sits in the same place in both."""
    if not embeddings:
        raise ValueError("plot_embeddings needs at least one embedding")
    if adversarial_colour not in ("true", "predicted"):
        raise ValueError(f"adversarial_colour must be 'true' or 'predicted', got {adversarial_colour!r}")
    from matplotlib.lines import Line2D

    plt = pyplot()
    num_classes = max(int(e.labels.max()) + 1 if len(e.labels) else 0 for e in embeddings.values())
    if class_names is not None:
        num_classes = max(num_classes, len(class_names))
    colours = class_colours(num_classes)
    shape = (len(embeddings), 2) if clean_panels else (1, len(embeddings))
    fig, axes = plt.subplots(*shape, figsize=(6 * shape[1] + 1.5, 6 * shape[0]), squeeze=False)
    panels = iter(axes.flat)
    letters = itertools.cycle(string.ascii_lowercase)  # the paper's (a), (b), ... in reading order
    for label, e in embeddings.items():
        if clean_panels:
            _draw_panel(next(panels), e, colours, adversarial_colour, with_adversarial=False,
                        title=f"({next(letters)}) {label}: clean test samples only")
        _draw_panel(next(panels), e, colours, adversarial_colour, with_adversarial=True,
                    title=_adversarial_title(label, e, next(letters) if clean_panels else None))
    handles = class_legend_handles(num_classes, class_names) if num_classes <= LEGEND_MAX_CLASSES else []
    handles += [
        Line2D([], [], marker="o", linestyle="", color="grey", markersize=5, label="clean test sample"),
        Line2D([], [], marker="+", linestyle="", color="grey", markersize=9, markeredgewidth=1.6,
               label=f"adversarial example\n(colour: {adversarial_colour} class)"),
    ]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    method = ", ".join(sorted({e.method for e in embeddings.values()}))
    fig.suptitle(title or f"t-SNE of penultimate features ({method}); colour = class, '+' = successful "
                          f"adversarial example coloured by its {adversarial_colour} class", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1 - 0.18 / fig.get_figheight()))
    return save_figure(fig, path)


def _adversarial_title(label: str, e: FeatureEmbedding, letter: str | None) -> str:
    eps = "" if e.eps is None else f", ε={e.eps:g}"
    fooled = f"{int(e.adversarial.sum())}/{e.attacked} fooled by {e.attack}{eps} ({100 * e.success_rate:.1f}%)"
    if letter is None:
        return f"{label}\n{fooled}"
    return f"({letter}) {label}: clean + successful adversarial examples\n{fooled}"


def _draw_panel(ax, e: FeatureEmbedding, colours: np.ndarray, adversarial_colour: str, *, with_adversarial: bool,
                title: str) -> None:
    """Clean samples as dots coloured by class and, if asked, the adversarial examples as '+'."""
    clean, adv = ~e.adversarial, e.adversarial
    ax.scatter(*e.coordinates[clean].T, c=colours[e.labels[clean]], s=6, alpha=0.55, linewidths=0)
    if with_adversarial:
        adv_classes = e.labels[adv] if adversarial_colour == "true" else e.predictions[adv]
        # A dark outline under each '+' keeps it visible on top of a cluster of its own colour.
        ax.scatter(*e.coordinates[adv].T, c="black", marker="+", s=46, linewidths=2.2, alpha=0.7)
        ax.scatter(*e.coordinates[adv].T, c=colours[adv_classes], marker="+", s=36, linewidths=1.2)
    else:  # the same limits as the adversarial panel, so the two panels line up point for point
        ax.update_datalim(e.coordinates)
        ax.autoscale_view()
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
