"""PNG plots of the analyses (headless matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustloss.analysis.rank import RANK_BINS, RankStudy
from robustloss.report.plots import _pyplot, _save


def plot_gap_distributions(gaps: dict[str, np.ndarray], path: str | Path, title: str = "Probability gap") -> Path:
    """Overlaid histograms of f_y - max_{y'!=y} f_y', one per run, with each mean marked."""
    plt = _pyplot()
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
    return _save(fig, path)


def plot_rank_study(studies: dict[str, RankStudy], path: str | Path, title: str = "") -> Path:
    """Left: share of adversarial examples by rank of their class (bars per run). Right: new
    successes at each eps increment (a line per run)."""
    plt = _pyplot()
    fig, (bars, line) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(studies), 1)
    for i, (label, study) in enumerate(studies.items()):
        shares = study.percentages()
        positions = np.arange(len(RANK_BINS)) + i * width
        bars.bar(positions, [shares[b] for b in RANK_BINS], width=width, color=f"C{i}", label=label)
        line.plot(study.eps, study.new_successes, marker=".", color=f"C{i}", label=label)
    bars.set_xticks(np.arange(len(RANK_BINS)) + width * (len(studies) - 1) / 2, RANK_BINS)
    bars.set_xlabel("rank of the adversarial class among the clean probabilities")
    bars.set_ylabel("adversarial examples (%)")
    bars.legend()
    line.set_xlabel("ε")
    line.set_ylabel("new adversarial examples")
    line.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
