"""Each gradient-masking diagnostic, demonstrated on records or models built to trip it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from robustloss.evaluate import AttackSpec, Evaluation, evaluate
from robustloss.evaluate.diagnostics import MASKED_GRADIENT_SHARE, diagnose, format_diagnostics, sign_test
from robustloss.evaluate.probes import gradient_probe, plan_objectives, probe_plan
from robustloss.evaluate.records import NOT_ATTACKED, AttackRecord
from robustloss.evaluate.worst_case import worst_case_robust
from robustloss.train import Phase, TrainConfig, train

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}
N = 200


def rec(attack, eps, accuracy, norm="linf", **params):
    """A record where the first ``accuracy`` share of N samples survive (all are clean-correct)."""
    keep = round(accuracy * N)
    adv = np.array([0] * keep + [1] * (N - keep))
    linf = np.full(N, eps or 0.0, dtype=np.float32)
    return AttackRecord(attack, eps, {"eps": eps, **params}, adv_pred=adv, linf=linf, l2=linf, norm=norm,
                        queries=np.ones(N, dtype=np.int64))


def ev(*records, **meta):
    return Evaluation(np.arange(N), np.zeros(N, dtype=np.int64), np.zeros(N, dtype=np.int64), list(records), meta)


def status(evaluation, number):
    return {d.number: d for d in diagnose(evaluation)}[number]


def test_1_iterative_weaker_than_fgsm_warns():
    assert status(ev(rec("fgsm", 0.1, 0.3), rec("pgd", 0.1, 0.6, steps=40, step_size=0.01)), 1).status == "warn"
    assert status(ev(rec("fgsm", 0.1, 0.6), rec("pgd", 0.1, 0.3, steps=40, step_size=0.01)), 1).status == "pass"


def test_3_accuracy_rising_with_eps_warns():
    rising = ev(rec("pgd", 0.1, 0.2, steps=40, step_size=0.01), rec("pgd", 0.2, 0.5, steps=40, step_size=0.01))
    assert status(rising, 3).status == "warn"
    falling = ev(rec("pgd", 0.1, 0.5, steps=40, step_size=0.01), rec("pgd", 0.2, 0.2, steps=40, step_size=0.01))
    assert status(falling, 3).status == "pass"


def test_5_unconverged_or_inverted_steps_warn():
    unconverged = ev(rec("pgd", 0.1, 0.6, steps=10, step_size=0.02), rec("pgd", 0.1, 0.2, steps=200, step_size=0.02))
    assert "not converged" in status(unconverged, 5).detail
    inverted = ev(rec("pgd", 0.1, 0.2, steps=10, step_size=0.02), rec("pgd", 0.1, 0.6, steps=200, step_size=0.02))
    assert status(inverted, 5).status == "warn"
    same = ev(rec("pgd", 0.1, 0.3, steps=10, step_size=0.02), rec("pgd", 0.1, 0.3, steps=200, step_size=0.02))
    assert status(same, 5).status == "pass"


def test_6_unreachable_budget_warns():
    assert status(ev(rec("bim", 0.3, 0.5, steps=10, step_size=0.01)), 6).status == "warn"
    assert status(ev(rec("pgd", 0.3, 0.5, steps=40, step_size=0.01)), 6).status == "pass"


def test_missing_records_are_not_applicable():
    assert {d.status for d in diagnose(ev())} == {"n/a"}
    assert "| 1 |" in format_diagnostics(diagnose(ev()))


class Quantised(nn.Module):
    """A non-differentiable input quantiser in front of a model: a classic masked-gradient defence."""

    def __init__(self, model):
        super().__init__()
        self.model, self.num_classes = model, model.num_classes

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)  # d round / dx = 0 almost everywhere


def test_2_4_7_a_quantised_model_trips_the_gradient_checks(trained_lenet, mnist5k, cnn3_substitute):
    masked = Quantised(trained_lenet).eval()
    sub = cnn3_substitute
    plan = [AttackSpec("pgd", [0.3], {"steps": 20, "step_size": 0.03}),
            AttackSpec("transfer", [0.3], {"substitute": str(sub), "method": "mim"}),
            AttackSpec("pgd", [1.0], {"steps": 20, "step_size": 0.125}, label="pgd-huge")]
    result = evaluate(masked, mnist5k.test, plan, max_samples=N, **QUIET)
    assert plan_objectives(plan, masked) == ["ce"]  # the transfer attack follows its substitute's gradients
    result.meta["gradient_probe"] = gradient_probe(masked, mnist5k.test, objectives=["ce"], n=N)
    assert status(result, 2).status == "warn"  # transfer breaks what white-box PGD cannot
    assert "signature of masked gradients" in status(result, 2).detail
    assert status(result, 4).status == "warn"  # eps = 1 does not reach ~0% without gradients
    assert status(result, 7).status == "warn"
    assert result.meta["gradient_probe"] == {"n": N, "objectives": [{"objective": "ce", "zero": N, "nonfinite": 0}]}
    # the same checks pass on the plain model
    clean = evaluate(trained_lenet, mnist5k.test, plan, max_samples=N, **QUIET)
    clean.meta["gradient_probe"] = gradient_probe(trained_lenet, mnist5k.test, objectives=["ce"], n=N)
    assert [status(clean, k).status for k in (2, 4, 7)] == ["pass", "pass", "pass"]


def test_8_mmc_attacked_with_plain_ce_warns(mnist5k, tmp_path):
    # MMC from scratch (97% clean). Switching from a CE warm-up to MMC at Adam lr 0.01 kills LeNet-5's ReLU
    # features on this data (the loss sticks at 1/2 C_MM^2 = 50), so the recipe here has no CE phase.
    model = train(TrainConfig(recipe=[Phase("mmc", 3)], seed=0), tmp_path / "mmc", data=mnist5k,
                  **QUIET).model
    plan = [AttackSpec("pgd", [0.1, 0.2], {"objective": "ce"})]
    probes = [s for s in probe_plan(plan) if s.label in ("diag-pgd-ce", "diag-pgd-adaptive")]
    result = evaluate(model, mnist5k.test, probes, max_samples=N // 2, **QUIET)
    diag = status(result, 8)
    assert diag.status == "warn" and "CE is the weaker objective; report mmc" in diag.detail
    for eps in (0.1, 0.2):  # the probes ran at both budgets, under their own labels
        assert result.find("diag-pgd-adaptive", eps).objective == "mmc"
        assert result.find("diag-pgd-ce", eps).objective == "ce"
        assert f"diag-pgd-ce eps={eps:g}: CE" in diag.detail
    # The smaller budget's worst case now includes the adaptive objective: the samples it breaks that
    # CE-PGD left standing leave the worst case (the old probes ran at the top eps only, so they did not).
    ce_only = Evaluation(result.index, result.labels, result.clean_pred,
                         [r for r in result.records if r.objective == "ce"])
    before, after = worst_case_robust(ce_only, "linf", 0.1), worst_case_robust(result, "linf", 0.1)
    # paired: b = samples the probes broke within 0.1 that CE-PGD did not, c = 0 by construction
    assert sign_test(int((before & ~after).sum()), 0) < 0.01
    # Check 7 on the same model: the plan attacked with CE, whose input gradient this head zeroes
    probe = gradient_probe(model, mnist5k.test, objectives=plan_objectives(plan, model), n=N)
    assert [e["objective"] for e in probe["objectives"]] == ["ce"]
    assert status(ev(gradient_probe=probe), 7).status == "warn"


def _linf_budgets(probes):
    return {e for p in probes if p.label != "diag-pgd-huge" and p.attack != "pgd-l2" for e in p.eps}


def test_probe_plan_keeps_l2_and_linf_budgets_apart():
    # An L2 radius must not become an L-inf budget of the probes, nor the other way round.
    probes = probe_plan([AttackSpec("pgd-l2", [1.5]), AttackSpec("pgd", [0.1, 0.2])])
    assert _linf_budgets(probes) == {0.1, 0.2}
    l2 = {p.label: p.eps for p in probes if p.attack == "pgd-l2"}
    assert l2 == {"diag-pgd-l2-ce": [1.5], "diag-pgd-l2-margin": [1.5], "diag-pgd-l2-adaptive": [1.5]}
    only_l2 = probe_plan([AttackSpec("pgd-l2", [1.5])])
    assert _linf_budgets(only_l2) == {0.3}  # the default L-inf budget
    assert not any(p.attack == "pgd-l2" for p in probe_plan([AttackSpec("pgd", [0.3])]))  # no L2 budget: no L2 probe


def test_objective_probes_run_at_every_eps_of_the_plan():
    # The old probes ran at the largest eps only, so the worst case at smaller eps missed the strongest objective.
    probes = probe_plan([AttackSpec("pgd", [0.1, 0.3]), AttackSpec("fgsm", [0.2]), AttackSpec("pgd-l2", [1.0, 2.0])])
    for label, objective in (("diag-pgd-ce", "ce"), ("diag-pgd-margin", "cw"), ("diag-pgd-adaptive", "adaptive")):
        specs = [p for p in probes if p.label == label]
        assert sorted(e for p in specs for e in p.eps) == [0.1, 0.2, 0.3]
        for p in specs:  # 40 steps of 2.5 eps / 40 at each budget: the step scales with that budget
            (eps,) = p.eps
            assert p.params == {"steps": 40, "step_size": pytest.approx(2.5 * eps / 40), "objective": objective}
        l2 = [p for p in probes if p.label == label.replace("pgd", "pgd-l2")]
        assert [p.eps for p in l2] == [[1.0, 2.0]] and l2[0].build(2.0).step_size == pytest.approx(2.5 * 2.0 / 40)
    top_only = {p.label: p.eps for p in probes if p.label in ("diag-pgd-long", "diag-pgd-huge")}
    assert top_only == {"diag-pgd-long": [0.3], "diag-pgd-huge": [1.0]}
    assert not any(p.label == "diag-fgsm" for p in probes)  # the plan has FGSM already
    # a plan evaluated with diagnostics (probes in the plan already) is not probed twice over
    assert _linf_budgets(probe_plan([AttackSpec("pgd", [0.1])] + probes)) == {0.1}


def test_3_probe_series_with_a_step_proportional_to_eps_are_checked():
    def probe(eps, accuracy):
        record = rec("pgd", eps, accuracy, steps=40, step_size=2.5 * eps / 40, objective="ce")
        record.label = "diag-pgd-ce"
        return record

    diag = status(ev(probe(0.1, 0.2), probe(0.2, 0.5)), 3)
    assert diag.status == "warn" and "diag-pgd-ce: 20.0% at eps=0.1 but 50.0% at eps=0.2" in diag.detail
    assert status(ev(probe(0.1, 0.5), probe(0.2, 0.2)), 3).status == "pass"


def test_9_stochastic_model_without_eot_warns():
    plain = rec("pgd", 0.1, 0.5, steps=40, step_size=0.01)
    with_eot = rec("pgd", 0.1, 0.4, steps=40, step_size=0.01, eot=10)
    warned = status(ev(plain, stochastic=True), 9)
    assert warned.status == "warn" and "eot=" in warned.detail and "linf eps=0.1" in warned.detail
    assert status(ev(plain, with_eot, stochastic=True), 9).status == "pass"
    assert status(ev(plain, stochastic=False), 9).status == "pass"
    assert status(ev(plain), 9).status == "n/a"  # not probed: record_stochasticity was not called


class Saturated(nn.Module):
    """Logits x 1e4: on a correctly classified sample the float32 softmax is exactly one-hot, so the CE
    gradient is exactly 0 (softmax - onehot), while the logit margin (cw) keeps its gradient."""

    def __init__(self, model):
        super().__init__()
        self.model, self.num_classes = model, model.num_classes

    def forward(self, x):
        return self.model(x) * 1e4


def test_7_probes_every_objective_the_plan_used(trained_lenet, mnist5k):
    saturated = Saturated(trained_lenet).eval()
    ce_plan = [AttackSpec("pgd", [0.1], {"objective": "ce"}), AttackSpec("fgsm", [0.1], {"objective": "cw"})]
    cw_plan = [AttackSpec("pgd", [0.1], {"objective": "cw"})]
    assert plan_objectives(ce_plan, saturated) == ["ce", "cw"]
    probe = gradient_probe(saturated, mnist5k.test, objectives=plan_objectives(ce_plan, saturated), n=N)
    x, y = mnist5k.test.batch(slice(0, N))
    with torch.no_grad():
        one_hot = (torch.softmax(saturated(x), dim=1) == nn.functional.one_hot(y, 10)).all(dim=1)
    ce, cw = probe["objectives"]
    assert probe["n"] == N and ce == {"objective": "ce", "zero": int(one_hot.sum()), "nonfinite": 0}
    assert cw == {"objective": "cw", "zero": 0, "nonfinite": 0}
    assert ce["zero"] > MASKED_GRADIENT_SHARE * N  # the model is ~96% accurate, so most samples saturate
    diag = status(ev(gradient_probe=probe), 7)
    assert diag.status == "warn" and diag.numbers["masked"] == ["ce"]
    assert "Attacks using ce see no gradient" in diag.detail and "upper bounds" in diag.detail
    # the same model attacked only with the margin objective: its gradients exist, nothing to warn about
    probe = gradient_probe(saturated, mnist5k.test, objectives=plan_objectives(cw_plan, saturated), n=N)
    assert status(ev(gradient_probe=probe), 7).status == "pass"
    # the old default probed the adaptive objective (cw here) whatever the plan used: it missed the CE masking
    assert gradient_probe(saturated, mnist5k.test, n=N)["objectives"] == [cw]


def test_plan_objectives_resolves_dedupes_and_skips_gradient_free_attacks():
    class MMCModel(nn.Module):
        trained_with = "mmc"

    plan = [AttackSpec("pgd", [0.3], {"objective": "ce"}),
            AttackSpec("spsa", [0.3], {"objective": "dlr"}),  # gradient-free
            AttackSpec("transfer", [0.3], {"substitute": "runs/substitute"}),  # another model's gradients
            AttackSpec("gaussian-noise", [None]),  # no objective at all
            AttackSpec("pgd", [0.1, 0.3], {"objective": "adaptive"}),
            AttackSpec("bim", [0.3], {"objective": "ce"}),
            AttackSpec("pgd", [0.3], {"objective": "dlr"}, label="diag-pgd-x"),  # a probe, not the plan
            AttackSpec("deepfool")]  # differentiates the logit margin
    assert plan_objectives(plan, MMCModel()) == ["ce", "mmc", "cw"]
    assert plan_objectives([AttackSpec("spsa", [0.3])], MMCModel()) == []


def test_7_reads_the_old_stored_format_and_an_empty_probe():
    old = {"objective": "ce", "n": N, "zero": 186, "nonfinite": 0}
    diag = status(ev(gradient_probe=old), 7)
    assert diag.status == "warn" and "ce: 186 zero" in diag.detail and diag.numbers["masked"] == ["ce"]
    assert status(ev(gradient_probe={"objective": "cw", "n": N, "zero": 2, "nonfinite": 1}), 7).status == "pass"
    assert status(ev(gradient_probe={"n": N, "objectives": []}), 7).status == "n/a"


def paired(b, c, both, n=N, skipped_broken_by_ce=0, other_step=0.01):
    """A CE and a cw record of the same PGD: ``both`` samples broken by both, ``b`` by cw only, ``c`` by CE
    only, and ``skipped_broken_by_ce`` broken by CE that the cw run skipped (worst-case mode)."""
    labels = np.zeros(n, dtype=np.int64)
    ce_adv, cw_adv = labels.copy(), labels.copy()
    ce_adv[:both + c] = 1
    cw_adv[:both] = 1
    cw_adv[both + c:both + c + b] = 1
    skipped = slice(both + c + b, both + c + b + skipped_broken_by_ce)
    ce_adv[skipped], cw_adv[skipped] = 1, NOT_ATTACKED
    size = np.full(n, 0.1, dtype=np.float32)

    def record(adv, objective, step):
        return AttackRecord("pgd", 0.1, {"eps": 0.1, "steps": 40, "step_size": step, "objective": objective},
                            adv_pred=adv, linf=size, l2=size, queries=np.ones(n, dtype=np.int64))

    return Evaluation(np.arange(n), labels, labels.copy(),
                      [record(ce_adv, "ce", 0.01), record(cw_adv, "cw", other_step)])


def test_8_equal_accuracies_on_different_samples_do_not_warn():
    diag = status(paired(b=20, c=20, both=40), 8)
    (pair,) = diag.numbers["comparisons"]
    assert diag.status == "pass" and pair["ce_accuracy"] == pair["other_accuracy"] == 0.7
    assert (pair["other_only"], pair["ce_only"], pair["p"]) == (20, 20, 1.0)


def test_8_a_significant_paired_difference_warns_with_the_exact_p_value():
    # 10 samples broken by cw only, none by CE only: 5 points apart, which the old unpaired threshold
    # (2 x max(1 point, 2 binomial standard errors) = 13 points at N = 200) let pass.
    diag = status(paired(b=10, c=0, both=40), 8)
    (pair,) = diag.numbers["comparisons"]
    assert pair["p"] == pytest.approx(2 / 2**10)  # 2 * P(X <= 0), X ~ Binomial(10, 1/2)
    assert diag.status == "warn" and "CE is the weaker objective; report cw" in diag.detail
    assert "CE 80.0% vs cw 75.0%" in diag.detail and "b = 10" in diag.detail and "c = 0" in diag.detail
    reversed_ = status(paired(b=0, c=10, both=40), 8)
    assert reversed_.status == "warn" and "cw is the weaker objective; report CE" in reversed_.detail
    # 12 against 2 is also 5 points, but chance gives a split this uneven in 1.3% of cases: no warning
    close = status(paired(b=12, c=2, both=40), 8)
    assert close.numbers["comparisons"][0]["p"] == pytest.approx(2 * (1 + 14 + 91) / 2**14)
    assert close.status == "pass"
    # samples the cw run skipped (already broken, worst-case mode) are no evidence for CE
    skipped = status(paired(b=10, c=0, both=40, skipped_broken_by_ce=10), 8)
    assert skipped.numbers["comparisons"][0]["ce_only"] == 0 and skipped.status == "warn"
    # a different step size is not the same attack: nothing to compare
    assert status(paired(b=10, c=0, both=40, other_step=0.02), 8).status == "n/a"


def test_8_significant_but_tiny_differences_do_not_warn():
    # 150 against 100 of 20000 samples: p ~ 0.002, yet a quarter of a point on the reported accuracy
    diag = status(paired(b=150, c=100, both=1000, n=20_000), 8)
    p = diag.numbers["comparisons"][0]["p"]
    assert p == pytest.approx(binomtest(100, 250, 0.5).pvalue, rel=1e-9) and p < 0.01
    assert diag.status == "pass"


def test_sign_test_matches_the_binomial_tail():
    for b, c in [(0, 0), (3, 3), (7, 1), (1, 7), (30, 12), (500, 430)]:
        assert sign_test(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue if b + c else 1.0, rel=1e-9)
    assert sign_test(5, 0) == 2 / 32 and math.isclose(sign_test(2, 6), 2 * (1 + 8 + 28) / 256)


def test_new_attacks_take_part_in_the_checks():
    square = status(ev(rec("square", 0.3, 0.2), rec("pgd", 0.3, 0.6, steps=40, step_size=0.01)), 2)
    assert square.status == "warn" and "signature of masked gradients" in square.detail
    assert "non-differentiable input transform" in square.detail
    assert status(ev(rec("fgsm", 0.1, 0.3), rec("apgd-t", 0.1, 0.6)), 1).status == "warn"
    assert status(ev(rec("fab", 1.0, 0.5)), 4).status == "warn"
    assert status(ev(rec("fab-t", 1.0, 0.0)), 4).status == "pass"
