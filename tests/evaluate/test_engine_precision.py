"""Evaluation under bf16: budgeted attacks step in bf16, verdicts stay fp32, minimum-norm attacks
stay fp32 altogether, and the cache never mixes precisions."""

from __future__ import annotations

import numpy as np
import pytest

from robustloss.evaluate import AttackSpec, evaluate

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


def test_bf16_evaluation_marks_budgeted_attacks_and_keeps_minimum_norm_ones_fp32(trained_lenet, mnist5k, tmp_path):
    plan = [AttackSpec("pgd", [0.1], {"steps": 5, "step_size": 0.03}), AttackSpec("deepfool", [None], {})]
    bf16 = evaluate(trained_lenet, mnist5k.test, plan, max_samples=120, precision="bf16", cache_dir=tmp_path, **QUIET)
    fp32 = evaluate(trained_lenet, mnist5k.test, plan, max_samples=120, cache_dir=tmp_path, **QUIET)
    pgd16, deepfool16 = bf16.records
    pgd32, deepfool32 = fp32.records
    assert pgd16.params["precision"] == "bf16" and "precision" not in deepfool16.params
    assert bf16.meta["precision"] == "bf16" and "precision" not in fp32.meta
    # DeepFool ran in fp32 both times: the same chunks, reused from the cache, the same outcome.
    assert np.array_equal(deepfool16.adv_pred, deepfool32.adv_pred)
    # PGD in bf16 is a different computation with its own cache entries, and still a real attack.
    assert abs(bf16.accuracy(pgd16) - fp32.accuracy(pgd32)) < 0.1
    assert bf16.accuracy(pgd16) < bf16.clean_accuracy


def test_unknown_precision_is_refused(trained_lenet, mnist5k):
    with pytest.raises(ValueError, match="fp16"):
        evaluate(trained_lenet, mnist5k.test, [AttackSpec("fgsm", [0.1], {})], max_samples=10, precision="fp16",
                 **QUIET)
