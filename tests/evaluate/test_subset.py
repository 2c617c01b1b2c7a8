"""``AttackSpec.n_samples``: an attack too costly for the whole test set runs on a fixed, seeded random
subset; its accuracy is over that subset, and every model and attack with the same size sees the same images."""

from __future__ import annotations

import numpy as np
import pytest

from robustloss.config import from_dict
from robustloss.errors import ConfigError
from robustloss.evaluate import AttackSpec, Evaluation, evaluate
from robustloss.evaluate.config import EvaluateConfig
from robustloss.evaluate.engine import sample_subset
from robustloss.evaluate.records import NOT_SAMPLED
from robustloss.evaluate.worst_case import worst_case_robust

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu", "batch_size": 64}
PGD = {"steps": 5, "step_size": 0.05}


@pytest.fixture(scope="module")
def evaluation(trained_lenet, mnist5k):
    plan = [AttackSpec("pgd", [0.2], PGD, label="full"), AttackSpec("pgd", [0.2], PGD, label="part", n_samples=60),
            AttackSpec("fgsm", [0.2], label="fgsm-part", n_samples=60)]
    return evaluate(trained_lenet, mnist5k.test, plan, max_samples=200, seed=3, **QUIET)


def test_subset_record_speaks_only_for_its_samples(evaluation):
    full, part, fgsm = (evaluation.find(name, 0.2) for name in ("full", "part", "fgsm-part"))
    assert full.sampled.all() and part.sampled.sum() == 60
    assert np.array_equal(part.sampled, fgsm.sampled)  # the same images for every attack of that size
    assert (part.adv_pred[~part.sampled] == NOT_SAMPLED).all() and not part.attacked[~part.sampled].any()
    assert np.array_equal(part.attacked, evaluation.clean_correct & part.sampled)
    robust = evaluation.robust(part)[part.sampled]
    assert evaluation.accuracy(part) == pytest.approx(robust.mean())
    assert 0.0 < evaluation.accuracy(part) < 1.0
    row = next(r for r in evaluation.summary() if r["attack"] == "part")
    assert row["n"] == 60 and row["accuracy"] == pytest.approx(robust.mean())


def test_subset_is_fixed_by_seed_and_size_only():
    a, b = sample_subset(1000, 100, seed=0), sample_subset(1000, 100, seed=0)
    assert np.array_equal(a, b) and a.sum() == 100
    assert not np.array_equal(a, sample_subset(1000, 100, seed=1))
    assert (sample_subset(1000, 100, 0) <= sample_subset(1000, 300, 0)).all()  # a smaller one is inside a larger
    assert sample_subset(50, 100, 0).all() and sample_subset(50, None, 0).all()


def test_same_subset_for_another_model(evaluation, mnist5k, tiny_model):
    other = evaluate(tiny_model, mnist5k.test, [AttackSpec("fgsm", [0.2], n_samples=60)], max_samples=200, seed=3,
                     **QUIET)
    assert np.array_equal(other.records[0].sampled, evaluation.find("part", 0.2).sampled)


def test_subset_survives_save_and_load(evaluation, tmp_path):
    loaded = Evaluation.load(evaluation.save(tmp_path / "records.npz"))
    for before, after in zip(evaluation.records, loaded.records):
        assert np.array_equal(before.sampled, after.sampled)
        assert loaded.accuracy(after) == evaluation.accuracy(before)


def test_worst_case_counts_a_subset_attack_only_where_it_ran(evaluation):
    robust = worst_case_robust(evaluation, "linf", 0.2)
    fooled_by_subset_only = evaluation.fooled(evaluation.find("fgsm-part", 0.2)) & ~evaluation.fooled(
        evaluation.find("full", 0.2)) & ~evaluation.fooled(evaluation.find("part", 0.2))
    assert not robust[fooled_by_subset_only].any()
    assert not (robust & ~evaluation.clean_correct).any()


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_subset_size_is_refused(bad):
    with pytest.raises(ConfigError, match="n_samples"):
        AttackSpec("spsa", [0.3], n_samples=bad)


def test_subset_size_from_an_experiment_file():
    config = from_dict(EvaluateConfig, {"attacks": [{"attack": "spsa-pc", "eps": [0.3], "n_samples": 1000}]})
    assert config.plan()[0].n_samples == 1000
    with pytest.raises(ConfigError, match="n_samples"):
        from_dict(EvaluateConfig, {"attacks": [{"attack": "spsa-pc", "eps": [0.3], "n_samples": 0}]})
