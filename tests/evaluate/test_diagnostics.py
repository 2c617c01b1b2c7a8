"""Each gradient-masking diagnostic, demonstrated on records or models built to trip it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustloss.evaluate import AttackSpec, Evaluation, evaluate
from robustloss.evaluate.diagnostics import diagnose, format_diagnostics, gradient_probe, probe_plan
from robustloss.evaluate.records import AttackRecord
from robustloss.train import Phase, TrainConfig, train

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}
N = 200


def rec(attack, eps, accuracy, norm="linf", **params):
    """A record where the first ``accuracy`` share of N samples survive (all are clean-correct)."""
    keep = int(round(accuracy * N))
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
    result.meta["gradient_probe"] = gradient_probe(masked, mnist5k.test, n=N)
    assert status(result, 2).status == "warn"  # transfer breaks what white-box PGD cannot
    assert status(result, 4).status == "warn"  # eps = 1 does not reach ~0% without gradients
    assert status(result, 7).status == "warn" and result.meta["gradient_probe"]["zero"] == N
    # the same checks pass on the plain model
    clean = evaluate(trained_lenet, mnist5k.test, plan, max_samples=N, **QUIET)
    clean.meta["gradient_probe"] = gradient_probe(trained_lenet, mnist5k.test, n=N)
    assert [status(clean, k).status for k in (2, 4, 7)] == ["pass", "pass", "pass"]


def test_8_mmc_attacked_with_plain_ce_warns(mnist5k, tmp_path):
    # MMC from scratch (97% clean). Switching from a CE warm-up to MMC at Adam lr 0.01 kills LeNet-5's ReLU
    # features on this data (the loss sticks at 1/2 C_MM^2 = 50), so the recipe here has no CE phase.
    model = train(TrainConfig(recipe=[Phase("mmc", 3)], seed=0), tmp_path / "mmc", data=mnist5k,
                  **QUIET).model
    plan = probe_plan([AttackSpec("pgd", [0.2])])
    result = evaluate(model, mnist5k.test, [s for s in plan if s.label in ("diag-pgd-ce", "diag-pgd-adaptive")],
                      max_samples=N, **QUIET)
    diag = status(result, 8)
    assert diag.status == "warn" and "CE is the weaker objective" in diag.detail
    assert result.find("diag-pgd-adaptive", 0.2).objective == "mmc"


def test_probe_plan_ignores_l2_budgets():
    # An L2 radius must not become the L-inf budget of the diagnostic probes.
    from robustloss.evaluate.diagnostics import probe_plan
    from robustloss.evaluate.plan import AttackSpec

    probes = probe_plan([AttackSpec("pgd-l2", [1.5]), AttackSpec("pgd", [0.1, 0.2])])
    budgets = {e for p in probes if p.label != "diag-pgd-huge" for e in p.eps}
    assert budgets == {0.2}
    only_l2 = probe_plan([AttackSpec("pgd-l2", [1.5])])
    assert {e for p in only_l2 if p.label != "diag-pgd-huge" for e in p.eps} == {0.3}  # the default L-inf budget


def test_9_stochastic_model_without_eot_warns():
    plain = rec("pgd", 0.1, 0.5, steps=40, step_size=0.01)
    with_eot = rec("pgd", 0.1, 0.4, steps=40, step_size=0.01, eot=10)
    warned = status(ev(plain, stochastic=True), 9)
    assert warned.status == "warn" and "eot=" in warned.detail and "linf eps=0.1" in warned.detail
    assert status(ev(plain, with_eot, stochastic=True), 9).status == "pass"
    assert status(ev(plain, stochastic=False), 9).status == "pass"
    assert status(ev(plain), 9).status == "n/a"  # not probed: record_stochasticity was not called
