"""The Findings block: paired differences with hand-computed confidence intervals, verdicts, warnings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from robustloss.evaluate.records import NOT_SAMPLED, AttackRecord, Evaluation
from robustloss.report.findings import (CONTRADICTED, NOT_REPRODUCED, REPRODUCED, compute_findings,
                                        findings_markdown)


@dataclass
class View:  # the fields of a report RunView that the findings read
    labels: dict
    evaluation: Evaluation
    diagnostics: list = field(default_factory=list)


def evaluation(robust: list[int], eps: float = 0.1, sampled: list[int] | None = None) -> Evaluation:
    """All images clean-correct (label 0); robust[i] says whether PGD left image i correct."""
    n = len(robust)
    adv = np.where(np.array(robust) == 1, 0, 1).astype(np.int64)
    if sampled is not None:
        adv[np.array(sampled) == 0] = NOT_SAMPLED
    record = AttackRecord("pgd", eps, {}, adv, np.full(n, eps, np.float32), np.zeros(n, np.float32),
                          np.zeros(n, np.int64), label="PGD")
    return Evaluation(np.arange(n), np.zeros(n, np.int64), np.zeros(n, np.int64), [record])


def document(better=60.0, than=50.0, claim=None):
    return {"file": {"claims": [claim or {"better": "B", "than": "A"}]},
            "published": [{"section": "", "method": "B", "row": "PGD", "param": 0.1, "metric": "accuracy", "value": better},
                          {"section": "", "method": "A", "row": "PGD", "param": 0.1, "metric": "accuracy", "value": than}]}


def test_single_seed_paired_interval_matches_hand_computation():
    b = [1] * 30 + [0] * 10   # 75% robust
    a = [1] * 20 + [0] * 20   # 50% robust; B is at least as robust as A on every image
    runs = [View({"method": "B"}, evaluation(b)), View({"method": "A"}, evaluation(a))]
    pgd, worst = compute_findings(runs, document(), "method", None)
    diff = 100.0 * (np.array(b) - np.array(a))  # ten images at +100, thirty at 0
    half = 1.959964 * diff.std(ddof=1) / math.sqrt(40)
    assert (pgd.row, pgd.param, pgd.n, pgd.seeds) == ("PGD", 0.1, 40, 1)
    assert pgd.ours == pytest.approx(25.0) and pgd.paper == pytest.approx(10.0)
    assert pgd.samples_ci == pytest.approx((25.0 - half, 25.0 + half), abs=1e-4)
    assert half == pytest.approx(1.959964 * math.sqrt(75000 / 39 / 40)) and pgd.seeds_ci is None  # 13.59
    assert pgd.verdict == REPRODUCED
    assert worst.row == "worst case" and worst.paper is None and worst.ours == pytest.approx(25.0)


def test_interval_containing_zero_is_not_reproduced_and_opposite_side_is_contradicted():
    same = [1, 0] * 20
    runs = [View({"method": "B"}, evaluation(same)), View({"method": "A"}, evaluation(same[1:] + same[:1]))]
    (pgd, _) = compute_findings(runs, document(), "method", None)
    assert pgd.ours == pytest.approx(0.0) and pgd.verdict == NOT_REPRODUCED
    runs = [View({"method": "B"}, evaluation([0] * 30 + [1] * 10)), View({"method": "A"}, evaluation([1] * 40))]
    (pgd, _) = compute_findings(runs, document(), "method", None)
    assert pgd.ours == pytest.approx(-75.0) and pgd.verdict == CONTRADICTED
    # Where the paper's own numbers go the other way, agreeing with them is reproducing them.
    (pgd, worst) = compute_findings(runs, document(better=40.0, than=50.0), "method", None)
    assert pgd.paper == pytest.approx(-10.0) and pgd.verdict == REPRODUCED and worst.verdict == CONTRADICTED


def test_several_seeds_use_a_t_interval_over_seed_differences():
    runs = []
    for seed, extra in (("0", 10), ("1", 12), ("2", 11)):  # B beats A by extra images out of 100
        runs += [View({"method": "B", "seed": seed}, evaluation([1] * (50 + extra) + [0] * (50 - extra))),
                 View({"method": "A", "seed": seed}, evaluation([1] * 50 + [0] * 50))]
    pgd = compute_findings(runs, document(), "method", None)[0]
    per_seed = np.array([10.0, 12.0, 11.0])
    half = 4.302653 * per_seed.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert pgd.seeds == 3 and pgd.ours == pytest.approx(per_seed.mean())
    assert pgd.seeds_ci == pytest.approx((per_seed.mean() - half, per_seed.mean() + half), abs=1e-3)
    assert pgd.verdict == REPRODUCED
    # Seed 0 gains only 2 images: over images the gain is still clear, over seeds it is not, and seeds decide.
    runs[0] = View({"method": "B", "seed": "0"}, evaluation([1] * 52 + [0] * 48))
    pgd = compute_findings(runs, document(), "method", None)[0]
    assert pgd.samples_ci[0] > 0 and pgd.seeds_ci[0] < 0 < pgd.seeds_ci[1]
    assert pgd.verdict == NOT_REPRODUCED


def test_subset_rows_pair_only_the_images_both_attacked():
    keep = [1] * 20 + [0] * 20
    runs = [View({"method": "B"}, evaluation([1] * 40, sampled=keep)),
            View({"method": "A"}, evaluation([0] * 20 + [1] * 20, sampled=keep))]
    pgd = compute_findings(runs, document(), "method", None)[0]
    assert pgd.n == 20 and pgd.ours == pytest.approx(100.0)


def test_warning_diagnostics_are_pointed_at_and_rendered():
    warn = [{"number": 8, "check": "objective fits the head", "status": "WARN"}, {"number": 1, "status": "pass"}]
    runs = [View({"method": "B"}, evaluation([1] * 30 + [0] * 10), warn), View({"method": "A"}, evaluation([1] * 40))]
    findings = compute_findings(runs, document(), "method", None)
    assert findings[0].warnings == ["B #8: objective fits the head"]
    text = findings_markdown(findings)
    assert text.startswith("## Findings") and "**B is more robust than A**: reproduced in 0 of 2 rows" in text
    assert "| — | PGD | 0.1 | -25.0 |" in text and "| contradicted | B #8 |" in text
    assert "- B #8: objective fits the head" in text and "one training seed" in text


def test_claim_restricted_to_rows_and_sections():
    runs = [View({"method": "B", "dataset": "X"}, evaluation([1] * 4)), View({"method": "A", "dataset": "X"},
                                                                              evaluation([0] * 4))]
    doc = document(claim={"better": "B", "than": "A", "sections": ["Y"]})
    assert compute_findings(runs, doc, "method", "dataset") == []
    doc = document(claim={"better": "B", "than": "A", "rows": ["FGSM"]})
    assert [f.row for f in compute_findings(runs, doc, "method", None)] == ["worst case"]
    assert findings_markdown([]) == ""


def test_wilson_interval_matches_hand_computation():
    from robustloss.report.experiment import wilson_interval

    # 80 of 100: centre (0.8 + 1.92/100) / 1.0384 = 0.78895, half 1.96 sqrt(0.0016 + 0.000096) / 1.0384 = 0.07774
    low, high = wilson_interval(80, 100)
    assert low == pytest.approx(0.7112, abs=2e-4) and high == pytest.approx(0.8667, abs=2e-4)
    assert wilson_interval(0, 50)[0] == pytest.approx(0.0, abs=1e-12) and 0.05 < wilson_interval(0, 50)[1] < 0.08
