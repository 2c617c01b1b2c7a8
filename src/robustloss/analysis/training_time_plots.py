"""PNG of clean test error against training time (MMC paper, Fig. 3a), one line per model.

Left: error against cumulative wall-clock time, the paper's axes. Right: the same error against
the epoch, which separates the two things the left panel mixes: how fast a loss converges per
epoch and how much each epoch costs. Each model has its own colour, marker and line style, so
the lines stay apart in greyscale and where they cross. The error axis is logarithmic: the
curves fall from near chance to a few percent, and the differences the paper discusses are
between the final few percent.
"""

from __future__ import annotations

from pathlib import Path

from robustloss.analysis.training_time import TrainingCurve
from robustloss.figures import colours, pyplot, save_figure

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
LEGEND_COLUMNS = 3
MARKERS_PER_LINE = 12  # more epochs than this get a marker every few points, so lines stay readable

# (unit, seconds per unit, the largest total shown in that unit)
TIME_UNITS = (("s", 1.0, 300.0), ("min", 60.0, 3 * 3600.0), ("h", 3600.0, float("inf")))


def time_unit(longest_seconds: float) -> tuple[str, float]:
    """The unit that keeps the time axis's numbers short: seconds, minutes or hours."""
    for unit, scale, limit in TIME_UNITS:
        if longest_seconds <= limit:
            return unit, scale
    raise AssertionError("unreachable: the last unit has no limit")


def plot_training_curves(curves: list[TrainingCurve], path: str | Path, *, reference: TrainingCurve | None = None,
                         title: str = "") -> Path:
    """Two panels (error vs time, error vs epoch), one styled line per curve; returns the PNG path.
    The legend gives each model's seconds per epoch relative to ``reference`` (default: the first)."""
    if not curves:
        raise ValueError("plot_training_curves needs at least one curve")
    reference = reference or curves[0]
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    unit, scale = time_unit(max(c.total_seconds for c in curves))
    palette = colours([c.label for c in curves])
    fig, (by_time, by_epoch) = plt.subplots(1, 2, figsize=(13, 6))
    for i, c in enumerate(curves):
        style = {"color": palette[c.label], "marker": MARKERS[i % len(MARKERS)],
                 "linestyle": LINESTYLES[i % len(LINESTYLES)], "linewidth": 1.6, "markersize": 5,
                 "markevery": max(1, len(c.epochs) // MARKERS_PER_LINE), "label": _legend_label(c, reference)}
        by_time.plot([t / scale for t in c.cumulative_seconds], c.test_error, **style)
        by_epoch.plot(c.epochs, c.test_error, **style)
    by_time.set_xlabel(f"cumulative wall-clock training time ({unit})")
    by_time.set_xlim(left=0)  # training starts at time 0, as on the paper's axis
    by_time.set_title("Clean test error vs training time", fontsize=11)
    by_epoch.set_xlabel("epoch")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_epoch.set_title("Clean test error vs epoch", fontsize=11)
    # A 0% error has no place on a log axis: then the axis stays linear.
    logarithmic = min(e for c in curves for e in c.test_error) > 0
    for ax in (by_time, by_epoch):
        _error_axis(ax, logarithmic)
    # Below both panels, where it hides no curve (inside, it would sit on one of them).
    columns = min(len(curves), LEGEND_COLUMNS)
    rows = -(-len(curves) // columns)
    fig.legend(*by_time.get_legend_handles_labels(), loc="lower center", ncol=columns, fontsize=9, frameon=False)
    fig.suptitle(title or "Clean test error during training (test error after each epoch; time from metrics.csv)",
                 fontsize=11)
    fig.tight_layout(rect=(0, (0.1 + 0.22 * rows) / fig.get_figheight(), 1, 0.96))
    return save_figure(fig, path)


def _legend_label(curve: TrainingCurve, reference: TrainingCurve) -> str:
    """The model, its seconds per epoch and that relative to the reference (the paper's comparison)."""
    label = f"{curve.label}: {curve.seconds_per_epoch:.3g} s/epoch"
    if curve is reference or reference.seconds_per_epoch <= 0:
        return label
    return f"{label} ({curve.seconds_per_epoch / reference.seconds_per_epoch:.2f}× {reference.label})"


def _error_axis(ax, logarithmic: bool) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_ylabel("clean test error (%)")
    ax.grid(True, which="major", alpha=0.3)
    if not logarithmic:
        return
    ax.set_yscale("log")
    # Plain numbers ("2", "5", "20") on the log axis: readers compare percentages, not powers of ten.
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
