"""Analyses of how models fail (the PC paper's Fig. 2 and probability gaps)."""

from robustloss.analysis.probability_gap import GapSummary, probability_gaps, summarize_gaps
from robustloss.analysis.rank import RankStudy, class_rank, misclassification_ranks

__all__ = ["GapSummary", "probability_gaps", "summarize_gaps", "RankStudy", "class_rank", "misclassification_ranks"]
