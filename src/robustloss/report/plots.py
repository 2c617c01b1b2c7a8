"""PNG plots for experiment reports: accuracy against ε, clean against robust accuracy, and
training curves.

Each public function builds a figure, writes it to a PNG and closes it (reports draw many
plots in one process, and open figures would pile up). matplotlib is imported lazily with
the headless Agg backend so importing this module never needs a display.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from robustloss.figures import colours, pyplot, save_figure
from robustloss.report.render import is_worst_case

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PANEL_SIZE = (4.2, 3.4)  # inches per subplot
MAX_PANELS_PER_ROW = 3
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]

Curve = list[tuple[float, float, "float | None"]]


def _unique(items) -> list:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------
# Accuracy against ε
# ---------------------------------------------------------------------------------------------


def _sorted_curve(points: Curve) -> tuple[list[float], list[float], list[float | None]]:
    points = sorted(points, key=lambda p: p[0])
    return [p[0] for p in points], [p[1] for p in points], [p[2] if len(p) > 2 else None for p in points]


def _draw_curve(ax: Axes, points: Curve, colour, label: str | None) -> None:
    xs, ys, stds = _sorted_curve(points)
    ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.6, color=colour, label=label, clip_on=False)
    with_std = [(x, y, s) for x, y, s in zip(xs, ys, stds) if s is not None]
    if not with_std:
        return
    sx, sy, ss = zip(*with_std)
    ax.errorbar(sx, sy, yerr=ss, fmt="none", ecolor=colour, elinewidth=1, capsize=3)
    if len(with_std) > 1:
        # A band shows the spread over seeds between the measured budgets as well.
        low = [max(0.0, y - s) for y, s in zip(sy, ss)]
        high = [min(100.0, y + s) for y, s in zip(sy, ss)]
        ax.fill_between(sx, low, high, color=colour, alpha=0.15, linewidth=0)


def _draw_reference(ax: Axes, points: Curve, colour) -> None:
    """The worst case drawn thin and dashed, for distance from it rather than as data of its own."""
    xs, ys, _ = _sorted_curve(points)
    ax.plot(xs, ys, linestyle="--", linewidth=0.9, color=colour, alpha=0.8, clip_on=False)


def _attack_order(curves: dict[str, dict[str, Curve]]) -> tuple[list[str], list[str]]:
    """(ordinary attacks in first-seen order, worst-case labels), the worst case going last."""
    labels = _unique(label for per_method in curves.values() for label, pts in per_method.items() if pts)
    return [x for x in labels if not is_worst_case(x)], [x for x in labels if is_worst_case(x)]


def _grid(fig: Figure, n: int) -> list[Axes]:
    ncols = min(n, MAX_PANELS_PER_ROW)
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)  # unused cells of the last grid row
    return axes[:n]


def _accuracy_vs_eps_figure(curves: dict[str, dict[str, Curve]], title: str = "") -> Figure:
    if not curves or not any(pts for per_method in curves.values() for pts in per_method.values()):
        raise ValueError("plot_accuracy_vs_eps: no curves to plot (curves is empty or every curve has no points)")
    attacks, worst = _attack_order(curves)
    panels = attacks + worst
    ncols = min(len(panels), MAX_PANELS_PER_ROW)
    nrows = math.ceil(len(panels) / ncols)
    plt = pyplot()
    fig = plt.figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + 0.8), layout="constrained")
    palette = colours(list(curves))
    # With several worst-case labels only the first is overlaid; more dashed lines per colour would be ambiguous.
    reference = worst[0] if worst else None
    for ax, attack in zip(_grid(fig, len(panels)), panels):
        for method, per_method in curves.items():
            if per_method.get(attack):
                _draw_curve(ax, per_method[attack], palette[method], None)
            if reference and attack not in worst and per_method.get(reference):
                _draw_reference(ax, per_method[reference], palette[method])
        ax.set_title(attack, fontweight="bold" if is_worst_case(attack) else "normal")
        ax.set_xlabel("ε")
        shown = [attack] if attack in worst or not reference else [attack, reference]
        _eps_ticks(ax, [p[0] for per_method in curves.values() for label in shown for p in per_method.get(label, [])])
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
    for ax in fig.axes[::ncols]:
        ax.set_ylabel("accuracy (%)")
    _method_legend(fig, palette, reference)
    if title:
        fig.suptitle(title)
    return fig


def _eps_ticks(ax: Axes, eps: list[float]) -> None:
    # Ticks at the budgets actually measured read better than matplotlib's crowded defaults.
    values = sorted(set(eps))
    if 0 < len(values) <= 6:
        ax.set_xticks(values, [f"{v:g}" for v in values])


def _method_legend(fig: Figure, colours: dict[str, tuple], reference: str | None) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", markersize=4, label=m) for m, c in colours.items()]
    if reference:
        handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=0.9, label=f"{reference} (dashed)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)


def plot_accuracy_vs_eps(curves: dict[str, dict[str, Curve]], path: str | Path, title: str = "") -> Path:
    """curves[method][attack label] = [(eps, mean accuracy %, std or None), ...]; one panel per attack."""
    return save_figure(_accuracy_vs_eps_figure(curves, title), path)


# ---------------------------------------------------------------------------------------------
# Clean against robust accuracy
# ---------------------------------------------------------------------------------------------

_POINT_KEYS = ("method", "clean", "robust", "label")
_LABEL_STEP = 0.04  # one label line, as a fraction of the axes height (about 10 points at 5.6 inches)


def _zoomed_range(values: list[float]) -> tuple[float, float]:
    """An axis range around ``values`` within [0, 100]: 15% of their span on each side, at least 10 wide."""
    lo, hi = min(values), max(values)
    pad = max(0.15 * (hi - lo), (10 - (hi - lo)) / 2, 1.0)
    lo, hi = max(0.0, lo - pad), min(100.0, hi + pad)
    if hi - lo < 10:  # pressed against 0 or 100: widen inwards
        lo, hi = (lo, min(100.0, lo + 10)) if lo == 0 else (max(0.0, hi - 10), hi)
    return lo, hi


def _clean_vs_robust_figure(points: list[dict], title: str = "") -> Figure:
    if not points:
        raise ValueError("plot_clean_vs_robust: no points to plot")
    for p in points:
        missing = [k for k in _POINT_KEYS if k not in p]
        if missing:
            raise ValueError(f"plot_clean_vs_robust: point {p!r} lacks {', '.join(missing)}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 5.6), layout="constrained")
    palette = colours(_unique(str(p["method"]) for p in points))
    labels = _unique(str(p["label"]) for p in points)
    markers = {label: MARKERS[i % len(MARKERS)] for i, label in enumerate(labels)}
    # Each axis is zoomed to its own data (clean accuracies cluster high, robust ones may all sit near 0),
    # so close methods stay apart. The diagonal (robust = clean: nothing lost under attack) is drawn where
    # it crosses the view; the distance below it is the robustness gap.
    xlim = _zoomed_range([p["clean"] for p in points])
    ylim = _zoomed_range([p["robust"] for p in points])
    ax.plot([0, 100], [0, 100], linestyle="--", color="grey", linewidth=1, label="robust = clean")
    ax.set(xlim=xlim, ylim=ylim, xlabel="clean accuracy (%)", ylabel="robust accuracy (%)")
    placed: list[tuple[float, float]] = []  # label anchors so far, in axes fractions
    for p in sorted(points, key=lambda q: (q["robust"], q["clean"])):
        method, label = str(p["method"]), str(p["label"])
        ax.scatter(p["clean"], p["robust"], color=palette[method], marker=markers[label], s=48, zorder=3,
                   edgecolors="black", linewidths=0.4)
        fx = (p["clean"] - xlim[0]) / (xlim[1] - xlim[0])
        fy = (p["robust"] - ylim[0]) / (ylim[1] - ylim[0])
        lift = 0
        # Stack labels whose anchors would overlap (same height, horizontally close) one line apart.
        while any(abs(fx - x) < 0.3 and abs(fy + lift * _LABEL_STEP - y) < _LABEL_STEP for x, y in placed):
            lift += 1
        placed.append((fx, fy + lift * _LABEL_STEP))
        right = fx > 0.6  # labels of points near the right edge go to their left, inside the axes
        ax.annotate(f"{method}, {label}", (p["clean"], p["robust"]), textcoords="offset points",
                    xytext=(-6 if right else 6, 4 + lift * 10), ha="right" if right else "left", fontsize=7)
    ax.grid(True, alpha=0.3)
    _point_legends(ax, palette, markers)
    if title:
        ax.set_title(title)
    return fig


def _point_legends(ax: Axes, colours: dict[str, tuple], markers: dict[str, str]) -> None:
    """Two legends: colour says the method, marker shape says the attack and budget."""
    from matplotlib.lines import Line2D

    by_method = [Line2D([], [], color=c, marker="o", linestyle="", label=m) for m, c in colours.items()]
    by_label = [Line2D([], [], color="grey", marker=mk, linestyle="", label=lb) for lb, mk in markers.items()]
    # Outside the axes, to the right, so they never cover points.
    first = ax.legend(handles=by_method, title="method", loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8,
                      title_fontsize=8)
    ax.add_artist(first)
    ax.legend(handles=by_label, title="attack", loc="lower left", bbox_to_anchor=(1.02, 0), fontsize=8,
              title_fontsize=8)


def plot_clean_vs_robust(points: list[dict], path: str | Path, title: str = "") -> Path:
    """Each point: {"method", "clean" (%), "robust" (%), "label"} (e.g. "PGD ε=0.1")."""
    return save_figure(_clean_vs_robust_figure(points, title), path)


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------


def _series(history: list[dict], key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """(epochs, values) for one key, skipping epochs that did not record it."""
    pairs = [(h["epoch"], h[key]) for h in history if h.get(key) is not None and h.get("epoch") is not None]
    pairs = [(e, v * scale) for e, v in pairs if not (isinstance(v, float) and math.isnan(v))]
    return [e for e, _ in pairs], [v for _, v in pairs]


def _phase_changes(histories: dict[str, list[dict]]) -> list[tuple[float, str]]:
    """(x position, new phase name) where a run switches loss; runs sharing a recipe share the marks."""
    changes = []
    for history in histories.values():
        for before, after in pairwise(history):
            if before.get("phase") != after.get("phase") and after.get("phase") is not None:
                # Between the last epoch of one phase and the first of the next.
                changes.append(((before["epoch"] + after["epoch"]) / 2, str(after["phase"])))
    return sorted(_unique(changes))


def _mark_phases(axes: list[Axes], changes: list[tuple[float, str]]) -> None:
    for ax in axes:
        for x, _ in changes:
            ax.axvline(x, linestyle=":", color="black", linewidth=1, alpha=0.7)
    top = axes[0]
    for x, name in changes:
        # x in data units, y in axes units: the name stays at the top whatever the scale.
        top.text(x, 0.98, f" {name}", transform=top.get_xaxis_transform(), rotation=90, va="top", ha="left",
                 fontsize=7, color="dimgrey")


def _training_curves_figure(histories: dict[str, list[dict]], title: str = "") -> Figure:
    if not histories or not any(histories.values()):
        raise ValueError("plot_training_curves: no histories to plot (empty or every run has no epochs)")
    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    palette = colours(list(histories))
    all_losses = []
    for run, history in histories.items():
        colour = palette[run]
        xs, ys = _series(history, "train_loss")
        all_losses += ys
        loss_ax.plot(xs, ys, color=colour, marker=".", label=run)
        xs, ys = _series(history, "train_acc", 100)
        acc_ax.plot(xs, ys, color=colour, linestyle="--", linewidth=1.2)
        xs, ys = _series(history, "test_acc", 100)
        acc_ax.plot(xs, ys, color=colour, marker=".", label=run)
    # Losses span decades across phases (and losses such as PC loss can be negative, hence the check).
    if all_losses and all(v > 0 for v in all_losses):
        loss_ax.set_yscale("log")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="loss")
    acc_ax.set(title="accuracy (train dashed, test solid)", xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100))
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
    _mark_phases([loss_ax, acc_ax], _phase_changes(histories))
    loss_ax.legend(fontsize=8)
    _accuracy_legend(acc_ax)
    if title:
        fig.suptitle(title)
    return fig


def _accuracy_legend(ax: Axes) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", linestyle="--"), Line2D([], [], color="grey")]
    labels += ["train", "test"]
    ax.legend(handles, labels, fontsize=8, loc="lower right")


def plot_training_curves(histories: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """histories[run label] = per-epoch dicts with epoch, train_loss, train_acc, test_acc (0..1), phase."""
    return save_figure(_training_curves_figure(histories, title), path)
