"""PNG of 2-D/3-D feature spaces with attack trajectories (the MMC paper's Fig. 3b layout).

One row per run, one column per attack objective. Test features are dots coloured by class;
each attacked input starts at a black star (its clean features), its iterates are shaded from
dark to bright by iteration, and the last iterate is an 'X', red when it fools the model.
3-D feature layers get mplot3d axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from robustloss.analysis.embedding_plots import LEGEND_MAX_CLASSES, class_colours, class_legend_handles
from robustloss.analysis.feature_space import FeatureSpaceStudy, FeatureTrajectories
from robustloss.figures import pyplot, save_figure

ITERATION_CMAP = "plasma"
FOOLED_COLOUR = "red"


def _panel_title(label: str, study: FeatureSpaceStudy, t: FeatureTrajectories) -> str:
    objective = t.objective if t.objective == t.resolved_objective else f"{t.objective} → {t.resolved_objective}"
    return (f"{label}\n{study.attack} {objective}, ε={study.eps:g}, {t.steps} steps of {study.step_size:g}: "
            f"{int(t.fooled.sum())}/{len(t.fooled)} fooled")


def _draw_panel(ax, study: FeatureSpaceStudy, t: FeatureTrajectories, colours: np.ndarray) -> None:
    dims = study.feature_dim
    # 3-D axes fade far points (depth shading); bigger, denser dots keep the clusters visible there.
    cloud = {"s": 4, "alpha": 0.35} if dims == 2 else {"s": 6, "alpha": 0.6, "depthshade": False}
    ax.scatter(*study.features.T, c=colours[study.labels], linewidths=0, **cloud)
    if study.centers is not None:
        ax.scatter(*study.centers.T, c=colours[: len(study.centers)], marker="D", s=60, edgecolors="black",
                   linewidths=1.2)
    steps = np.arange(t.steps + 1)
    for p in range(len(t.indices)):
        path = t.features[p]
        ax.plot(*path.T, color="black", linewidth=0.9, alpha=0.8)
        ax.scatter(*path[1:].T, c=steps[1:], cmap=ITERATION_CMAP, vmin=0, vmax=t.steps, s=16, edgecolors="black",
                   linewidths=0.3, zorder=3)
        ax.scatter(*path[0].T, marker="*", s=220, c="black", edgecolors="white", linewidths=0.8, zorder=4)
        face = FOOLED_COLOUR if t.fooled[p] else "white"
        ax.scatter(*path[-1].T, marker="X", s=90, c=face, edgecolors="black", linewidths=1.0, zorder=5)
    if dims == 2:
        ax.set_xlabel("z₁")
        ax.set_ylabel("z₂")
        ax.grid(alpha=0.2)
    else:
        ax.set_xlabel("z₁")
        ax.set_ylabel("z₂")
        ax.set_zlabel("z₃")


def _share_limits(axes: list) -> None:
    """The same limits on every panel of a row, so the objectives' trajectories compare at a glance."""
    getters = ["get_xlim", "get_ylim"] + (["get_zlim"] if hasattr(axes[0], "get_zlim") else [])
    for getter in getters:
        limits = np.array([getattr(ax, getter)() for ax in axes])
        for ax in axes:
            getattr(ax, "s" + getter[1:])(limits[:, 0].min(), limits[:, 1].max())


def plot_feature_space(
    studies: dict[str, FeatureSpaceStudy],
    path: str | Path,
    *,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Rows = runs (dict key = row label), columns = the objectives of each study; returns the PNG path."""
    if not studies:
        raise ValueError("plot_feature_space needs at least one study")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    plt = pyplot()
    num_classes = max(int(s.labels.max()) + 1 for s in studies.values())
    if class_names is not None:
        num_classes = max(num_classes, len(class_names))
    colours = class_colours(num_classes)
    columns = max(len(s.trajectories) for s in studies.values())
    fig = plt.figure(figsize=(6.2 * columns + 2.2, 5.8 * len(studies)))
    max_steps = 1
    for row, (label, study) in enumerate(studies.items()):
        projection = "3d" if study.feature_dim == 3 else None
        row_axes = []
        for col, t in enumerate(study.trajectories.values()):
            ax = fig.add_subplot(len(studies), columns, row * columns + col + 1, projection=projection)
            _draw_panel(ax, study, t, colours)
            ax.set_title(_panel_title(label, study, t), fontsize=9)
            max_steps = max(max_steps, t.steps)
            row_axes.append(ax)
        _share_limits(row_axes)

    handles = class_legend_handles(num_classes, class_names) if num_classes <= LEGEND_MAX_CLASSES else []
    handles += [
        Line2D([], [], marker="*", linestyle="", color="black", markersize=12, label="clean input"),
        Line2D([], [], marker="X", linestyle="", markerfacecolor=FOOLED_COLOUR, markeredgecolor="black",
               markersize=9, label="last iterate, fooled"),
        Line2D([], [], marker="X", linestyle="", markerfacecolor="white", markeredgecolor="black",
               markersize=9, label="last iterate, not fooled"),
    ]
    if any(s.centers is not None for s in studies.values()):
        handles.append(Line2D([], [], marker="D", linestyle="", markerfacecolor="grey", markeredgecolor="black",
                              markersize=8, label="class center"))
    fig.suptitle(title or "Test features (colour = class) and attack trajectories in feature space", fontsize=11)
    right = 1 - 2.0 / fig.get_figwidth()  # a 2-inch strip on the right for the legend and the colour bar
    fig.tight_layout(rect=(0, 0, right, 0.96))  # before the colour bar's axes, which tight_layout cannot place
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, bbox_to_anchor=(1.0, 0.95))
    colourbar_axes = fig.add_axes((right + 0.03, 0.08, 0.012, 0.3))
    fig.colorbar(ScalarMappable(Normalize(0, max_steps), plt.get_cmap(ITERATION_CMAP)), cax=colourbar_axes,
                 label="attack iteration")
    return save_figure(fig, path)
