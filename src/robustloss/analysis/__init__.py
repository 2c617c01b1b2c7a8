"""Analyses of how models fail: probability gaps, the misclassification rank of adversarial
examples (PC paper, Fig. 2), t-SNE feature embeddings with adversarial examples (PC Fig. 1/3),
low-dimensional feature spaces with attack trajectories (MMC, I-SCE Fig. 4) and clean test error
against wall-clock training time (MMC Fig. 3a).

Each is a function here and a registered analysis (``robustloss.analysis.registry``) that the
CLI (``robustloss analyze NAME RUN...``) and experiment files (``analyses:``) run alike.
"""

from robustloss.analysis.probability_gap import GapSummary, probability_gaps, summarize_gaps
from robustloss.analysis.rank import RankStudy, class_rank, misclassification_ranks
from robustloss.analysis.registry import Subject, analysis_names, run_analysis
from robustloss.analysis import builtin  # noqa: E402,F401,I001 (registers the analyses; after the registry)

__all__ = ["GapSummary", "probability_gaps", "summarize_gaps", "RankStudy", "class_rank", "misclassification_ranks",
           "Subject", "analysis_names", "run_analysis"]
