"""A table cell's number from an evaluation's per-sample records: accuracy, error rate or the distance
of the adversarial examples found, for one attack at one budget, the clean row or the worst case.

Pure functions of the records, used by the reports, the sweeps and the experiment schema (which
checks a sweep's metric before anything runs)."""

from __future__ import annotations

import math

import numpy as np

from robustloss.errors import RobustlossError
from robustloss.evaluate.records import Evaluation
from robustloss.evaluate.worst_case import worst_case_robust

PERCENT_METRICS = ("accuracy", "error_rate")
METRICS = (*PERCENT_METRICS, "mean_l2", "median_l2", "mean_linf")  # what metric_value computes
CLEAN_ROW = "clean"
WORST_CASE = "worst case"  # row name; "worst case (L2)" for another norm


def same_param(a: float | None, b: float | None) -> bool:
    """Two budgets (or two missing ones) are the same row."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)


def metric_value(evaluation: Evaluation | None, row: str, param: float | None, metric: str) -> float | None:
    """Our number for a table row (an attack's name, ``clean`` or ``worst case``) at budget ``param``,
    or None when the evaluation has no such row (or found no adversarial example to measure)."""
    if evaluation is None:
        return None
    if row == CLEAN_ROW:
        value = 100 * evaluation.clean_accuracy
        return 100 - value if metric == "error_rate" else value
    if row.startswith(WORST_CASE):
        norm = "linf" if row == WORST_CASE else row[len(WORST_CASE) + 2 : -1].lower()
        return 100 * float(worst_case_robust(evaluation, norm, float(param)).mean())
    record = next((r for r in evaluation.records if r.name == row and same_param(r.eps, param)), None)
    if record is None:
        return None
    if metric == "accuracy":
        return 100 * evaluation.accuracy(record)
    if metric == "error_rate":
        return 100 - 100 * evaluation.accuracy(record)
    fooled = evaluation.fooled(record)
    if not fooled.any():
        return None
    distances = {"mean_l2": record.l2, "median_l2": record.l2, "mean_linf": record.linf}.get(metric)
    if distances is None:
        raise RobustlossError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    chosen = distances[fooled]
    return float(np.median(chosen) if metric.startswith("median") else chosen.mean())
