"""The registered analyses: probability gap, misclassification rank, feature embedding,
low-dimensional feature space and training time. Each writes ``<prefix><name>.png`` and
``.csv`` into ``out``."""

from __future__ import annotations

import time
from pathlib import Path

from robustloss.analysis.registry import ANALYSES, AnalysisResult, Subject, write_csv


@ANALYSES.register("gap")
def gap_analysis(subjects: list[Subject], out: Path, prefix: str = "") -> AnalysisResult:
    """f_y - max_{y' != y} f_y' over the test split: distribution and summary per model."""
    from robustloss.analysis.plots import plot_gap_distributions
    from robustloss.analysis.probability_gap import probability_gaps, summarize_gaps

    gaps, rows, lines = {}, [], []
    for s in subjects:
        gaps[s.label] = probability_gaps(s.model, s.test, device=s.device)
        g = summarize_gaps(gaps[s.label])
        rows.append({"model": s.label, "n": g.n, "mean": round(g.mean, 4), "std": round(g.std, 4),
                     **{k: round(v, 4) for k, v in g.quantiles.items()},
                     **{f"below_{k}": round(v, 4) for k, v in g.below.items()}})
        lines.append(f"{s.label}: mean gap {g.mean:.3f} ± {g.std:.3f} (median {g.quantiles['median']:.3f}, "
                     f"{100 * g.below['0']:.1f}% misclassified) on {g.n} samples")
    csv = write_csv(out / f"{prefix}probability-gap.csv", rows)
    png = plot_gap_distributions(gaps, out / f"{prefix}probability-gap.png")
    return AnalysisResult([png, csv], rows, lines)


@ANALYSES.register("rank")
def rank_analysis(subjects: list[Subject], out: Path, prefix: str = "", attacks: list[str] | str = ("fgsm", "mim"),
                  eps_step: float = 0.005, eps_max: float = 0.3, steps: int | None = None,
                  seed: int = 0) -> AnalysisResult:
    """PC paper Fig. 2: over a fine eps grid, the rank (among the clean probabilities) of the
    class each newly successful adversarial example lands in; one panel per model and attack.
    ``steps``: iterative attacks (MIM) take that many steps of 2.5 eps / steps at each eps
    (default: the attack's own, e.g. MIM's 40 steps of 0.01); FGSM ignores it."""
    from robustloss.analysis.plots import plot_rank_studies
    from robustloss.analysis.rank import RANK_BINS, misclassification_ranks

    attacks = [attacks] if isinstance(attacks, str) else list(attacks)
    if not (0 < eps_step <= eps_max):
        raise ValueError(f"rank analysis: need 0 < eps_step <= eps_max, got eps_step={eps_step}, eps_max={eps_max}")
    grid = [round(eps_step * k, 10) for k in range(1, int(round(eps_max / eps_step)) + 1)]
    studies, rows, summary, lines = {}, [], [], []
    for s in subjects:
        x, y = s.test.batch(slice(0, len(s.test)))
        for attack in attacks:
            study = misclassification_ranks(s.model, x.to(s.device), y.to(s.device), attack=attack, eps_grid=grid,
                                            seed=seed, steps=None if attack == "fgsm" else steps)
            studies[(s.label, attack)] = study
            for eps, new, counts in zip(study.eps, study.new_successes, study.rank_counts):
                rows.append({"model": s.label, "attack": attack, "eps": eps, "new_successes": new, **counts})
            shares = study.percentages()
            summary.append({"model": s.label, "attack": attack, "adversarial": sum(study.new_successes),
                            **{f"{b} %": round(v, 1) for b, v in shares.items()}})
            lines.append(f"{s.label} ({attack}): {sum(study.new_successes)} adversarial examples; "
                         + ", ".join(f"{b} {v:.1f}%" for b, v in shares.items()))
    csv = write_csv(out / f"{prefix}rank.csv", rows)
    png = plot_rank_studies(studies, out / f"{prefix}rank.png", bins=RANK_BINS)
    return AnalysisResult([png, csv], summary, lines)


@ANALYSES.register("embedding")
def embedding_analysis(subjects: list[Subject], out: Path, prefix: str = "", attack: str = "pgd",
                       eps: float = 0.1, n: int = 1000, method: str = "auto", seed: int = 0,
                       clean_panels: bool = False) -> AnalysisResult:
    """PC paper Fig. 1/3: t-SNE of penultimate features, successful adversarial examples overlaid.
    ``clean_panels``: also each model's clean samples alone, left of its adversarial panel (Fig. 3a/c)."""
    from robustloss.analysis.embedding import embed_with_adversarial_examples, embedding_rows
    from robustloss.analysis.embedding_plots import plot_embeddings

    embeddings, rows, summary, lines = {}, [], [], []
    for s in subjects:
        started = time.perf_counter()
        e = embed_with_adversarial_examples(s.model, s.test, attack=attack, eps=eps, n=n, method=method, seed=seed,
                                            device=s.device)
        embeddings[s.label] = e
        rows += embedding_rows(s.label, e)
        fooled = int(e.adversarial.sum())
        summary.append({"model": s.label, "attack": attack, "eps": eps, "points": int((~e.adversarial).sum()),
                        "fooled": fooled, "attacked": e.attacked, "t-SNE": e.method})
        lines.append(f"{s.label}: {int((~e.adversarial).sum())} clean points, {fooled}/{e.attacked} fooled by "
                     f"{attack} eps={eps:g}; attack + t-SNE ({e.method}) {time.perf_counter() - started:.1f}s")
    csv = write_csv(out / f"{prefix}embedding.csv", rows)
    png = plot_embeddings(embeddings, out / f"{prefix}embedding.png", clean_panels=clean_panels)
    return AnalysisResult([png, csv], summary, lines)


@ANALYSES.register("features")
def feature_space_analysis(subjects: list[Subject], out: Path, prefix: str = "", points: int = 6,
                           attack: str = "pgd", eps: float = 0.3, steps: int = 20, step_size: float | None = None,
                           objectives: list[str] | str = ("ce", "adaptive"), seed: int = 0) -> AnalysisResult:
    """MMC Fig. 3b / I-SCE Fig. 4: a 2-D or 3-D feature layer plotted directly, with the PGD
    trajectories of a few points for a non-adaptive and the adaptive objective."""
    from robustloss.analysis.feature_space import feature_rows, feature_space_study, trajectory_rows
    from robustloss.analysis.feature_space_plots import plot_feature_space

    objectives = tuple(o.strip() for o in objectives.split(",")) if isinstance(objectives, str) else tuple(objectives)
    studies, rows, test_points, summary, lines = {}, [], [], [], []
    for s in subjects:
        study = feature_space_study(s.model, s.test, points=points, attack=attack, eps=eps, steps=steps,
                                    step_size=step_size, objectives=objectives, seed=seed, device=s.device)
        studies[s.label] = study
        rows += trajectory_rows(s.label, study)
        test_points += feature_rows(s.label, study)
        for name, t in study.trajectories.items():
            summary.append({"model": s.label, "objective": f"{name} ({t.resolved_objective})",
                            "fooled": f"{int(t.fooled.sum())}/{len(t.fooled)}", "steps": steps, "eps": eps})
        fooled = ", ".join(f"{name} ({t.resolved_objective}) {int(t.fooled.sum())}/{len(t.fooled)}"
                           for name, t in study.trajectories.items())
        lines.append(f"{s.label}: {study.feature_dim}-D features; fooled after {steps} steps: {fooled}")
    csv = write_csv(out / f"{prefix}feature-space.csv", rows)
    features_csv = write_csv(out / f"{prefix}feature-space-test-features.csv", test_points)
    png = plot_feature_space(studies, out / f"{prefix}feature-space.png")
    return AnalysisResult([png, csv, features_csv], summary, lines)


@ANALYSES.register("training-time")
def training_time_analysis(subjects: list[Subject], out: Path, prefix: str = "",
                           reference: str | None = None) -> AnalysisResult:
    """MMC paper Fig. 3a: clean test error against cumulative wall-clock training time, one line per
    model, read from each model folder's metrics.csv (the models and test splits are not used).
    ``reference``: the model whose time the others are compared with (default: the first)."""
    from robustloss.analysis.training_time import (curve_rows, read_training_curve, reference_curve, summary_line,
                                                   summary_rows)
    from robustloss.analysis.training_time_plots import plot_training_curves

    missing = [s.label for s in subjects if s.folder is None]
    if missing:
        raise ValueError(f"training-time analysis: no model folder (metrics.csv) for {', '.join(missing)}")
    curves = [read_training_curve(s.folder, s.label) for s in subjects]
    baseline = reference_curve(curves, reference)
    summary = summary_rows(curves, baseline)
    points = write_csv(out / f"{prefix}training-time.csv", curve_rows(curves))
    table = write_csv(out / f"{prefix}training-time-summary.csv", summary)
    png = plot_training_curves(curves, out / f"{prefix}training-time.png", reference=baseline)
    return AnalysisResult([png, points, table], summary, [summary_line(c, baseline) for c in curves])
