"""The per-sample worst case over attacks, computed from stored records.

A sample counts as broken at budget eps of norm p when any attack of that norm made it
misclassified with a perturbation of p-size at most eps. Using the recorded distances means
an example found at a small eps also counts at every larger eps of the same norm, and a
minimum-norm attack (C&W, DeepFool, run with eps=None) contributes to the whole L2 curve.
Attacks without a norm budget (noise, rotation) are separate threat models and are not
mixed into the curves.
"""

from __future__ import annotations

import numpy as np

from robustloss.evaluate.records import Evaluation


def broken_within(evaluation: Evaluation, norm: str, eps: float) -> np.ndarray:
    """(n,) bool: some attack of ``norm`` fooled the sample with a perturbation of size <= eps."""
    broken = np.zeros(evaluation.n, dtype=bool)
    for record in evaluation.records:
        if record.norm == norm:
            broken |= evaluation.fooled(record) & (record.distance(norm) <= eps + 1e-6)
    return broken


def worst_case_robust(evaluation: Evaluation, norm: str, eps: float) -> np.ndarray:
    """(n,) bool: correct on the clean input and not broken by any attack of ``norm`` within eps."""
    return evaluation.clean_correct & ~broken_within(evaluation, norm, eps)


def worst_case_curves(evaluation: Evaluation) -> dict[str, list[tuple[float, float]]]:
    """norm -> [(eps, worst-case robust accuracy)] at every budget the records used."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for norm in sorted({r.norm for r in evaluation.records if r.norm is not None}):
        budgets = sorted({r.eps for r in evaluation.records if r.norm == norm and r.eps is not None})
        curves[norm] = [(eps, float(worst_case_robust(evaluation, norm, eps).mean())) for eps in budgets]
    return curves
