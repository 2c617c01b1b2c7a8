"""PNG plots of the analyses (headless matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustloss.analysis.rank import RANK_BINS, RankStudy
from robustloss.figures import pyplot, save_figure


def plot_gap_distributions(gaps: dict[str, np.ndarray], path: str | Path, title: str = "Probability gap") -> Path:
    """Overlaid histograms of f_y - max_{y'!=y} f_y', one per run, with each mean marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(-1, 1, 81)
    for i, (label, values) in enumerate(gaps.items()):
        color = f"C{i}"
        ax.hist(values, bins=bins, alpha=0.45, color=color, label=f"{label} (mean {values.mean():.3f})")
        ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("f_y − max_{y'≠y} f_y'")
    ax.set_ylabel("test samples")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_rank_studies(studies: dict[tuple[str, str], RankStudy], path: str | Path,
                      bins: tuple[str, ...] = RANK_BINS) -> Path:
    """PC paper Fig. 2 layout, one panel per (model, attack): at each eps of the grid, stacked
    bars give the share of that increment's new adversarial examples by the rank of their class
    among the clean probabilities (left axis, %), and a black line the number of new successes
    (right axis). A last column sums each model's bars over the whole grid."""
    plt = pyplot()
    models = list(dict.fromkeys(label for label, _ in studies))
    attacks = list(dict.fromkeys(attack for _, attack in studies))
    fig, axes = plt.subplots(len(models), len(attacks) + 1, figsize=(4.6 * len(attacks) + 3.2, 3.3 * len(models)),
                             squeeze=False, gridspec_kw={"width_ratios": [3] * len(attacks) + [2]})
    colours = [f"C{i}" for i in range(len(bins))]
    for row, model in enumerate(models):
        for col, attack in enumerate(attacks):
            ax = axes[row][col]
            study = studies.get((model, attack))
            if study is None:
                ax.set_axis_off()
                continue
            eps = np.asarray(study.eps)
            width = 0.8 * (eps[1] - eps[0]) if len(eps) > 1 else 0.004
            new = np.asarray(study.new_successes, dtype=float)
            bottom = np.zeros(len(eps))
            for b, colour in zip(bins, colours):
                share = np.array([100.0 * c[b] / n if n else 0.0 for c, n in zip(study.rank_counts, new)])
                ax.bar(eps, share, width=width, bottom=bottom, color=colour, label=b)
                bottom += share
            ax.set_ylim(0, 100)
            ax.set_ylabel("new adversarial examples (%)")
            ax.set_xlabel("ε")
            ax.set_title(f"{model} · {attack}")
            counts = ax.twinx()
            counts.plot(eps, new, color="black", linewidth=1.2, marker=".", markersize=3)
            counts.set_ylabel("new successes")
            counts.set_ylim(bottom=0)
        totals = axes[row][-1]
        for i, attack in enumerate(attacks):
            study = studies.get((model, attack))
            if study is None:
                continue
            shares = study.percentages()
            left = 0.0
            for b, colour in zip(bins, colours):
                totals.barh(i, shares[b], left=left, color=colour)
                left += shares[b]
            totals.text(101, i, f"n={sum(study.new_successes)}", va="center", fontsize=8)
        totals.set_yticks(range(len(attacks)), attacks)
        totals.set_xlim(0, 125)
        totals.set_xlabel("all increments (%)")
        totals.set_title(f"{model} · whole grid")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours]
    fig.legend(handles + [plt.Line2D([], [], color="black", marker=".")],
               [f"{b} most probable" if b != "other" else "lower ranks" for b in bins] + ["new successes"],
               loc="lower center", ncol=len(bins) + 1, frameon=False)
    fig.suptitle("Where adversarial examples land: rank of the adversarial class among the clean probabilities")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return save_figure(fig, path)
