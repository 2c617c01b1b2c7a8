"""standard_evaluation and run_evaluation on plain user models, tensors and loaders, with real attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustloss.evaluate import (
    AttackSpec, EvaluateConfig, as_split, diagnostics_of, evaluate, run_evaluation, standard_evaluation, standard_plan,
    worst_case_robust,
)
from robustloss.evaluate.standard import wilson_interval
from robustloss.evaluate.run import gradient_free_first
from robustloss.evaluate.sanity import SanityCheck

N = 100
# AutoAttack's attacks at smaller budgets of iterations and queries, so the suite stays fast
FAST = {"apgd-ce": {"n_iter": 20}, "apgd-t": {"n_iter": 20, "n_target_classes": 3},
        "fab-t": {"n_iter": 20, "n_target_classes": 3}, "square": {"n_queries": 300}}
QUIET = {"progress": False, "device": "cpu"}


class UserNet(nn.Module):
    """A model as a user would write it: no robustloss attributes, only [0, 1] images -> logits."""

    def __init__(self, inner: nn.Module, transform=None, softmax: bool = False):
        super().__init__()
        self.inner, self.transform, self.softmax = inner, transform, softmax
        self.eval()

    def forward(self, x):
        if self.transform is not None:
            x = self.transform(x)
        logits = self.inner(x)
        return logits.softmax(dim=1) if self.softmax else logits


class RoundToQuarters(torch.autograd.Function):
    """x -> round(4x)/4 with the true (zero) gradient: a non-differentiable input quantiser."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(4 * x) / 4

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, N))


def test_standard_plan_is_autoattacks_order():
    plan = standard_plan("linf", 8 / 255)
    assert [s.attack for s in plan] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert plan[1].params["n_target_classes"] == 9 and plan[3].params["n_queries"] == 5000
    assert [s.attack for s in standard_plan("l2", [0.5], "rand")] == ["apgd-ce", "apgd-dlr"]
    assert all(s.params["eot"] == 20 for s in standard_plan("l2", [0.5], "rand"))
    assert standard_plan("linf", 0.3, num_classes=3)[1].params["n_target_classes"] == 2
    mmc = standard_plan("linf", 0.3, adaptive_objective="mmc")
    assert [s.name for s in mmc][:2] == ["apgd-ce", "apgd-mmc"] and mmc[1].params["objective"] == "mmc"
    with pytest.raises(ValueError, match="give the budget"):
        standard_plan("linf", None)
    with pytest.raises(ValueError, match="norm"):
        standard_plan("l1", 0.3)


def test_standard_evaluation_on_a_plain_module_and_tensors(trained_lenet, batch):
    x, y = batch
    model = UserNet(trained_lenet)
    report = standard_evaluation(model, x, y, norm="linf", eps=0.15, overrides=FAST, diagnostics=False, **QUIET)
    assert report.n == N and not model.training
    # the headline is the per-sample worst case over every record, and the attacks ran in the robust-mask order
    assert report.robust_accuracy == pytest.approx(worst_case_robust(report.evaluation, "linf", 0.15).mean())
    assert [row["attack"] for row in report.per_attack] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert report.robust_accuracy < report.clean_accuracy - 0.3
    assert sum(r["newly_broken"] for r in report.per_attack) == int(report.evaluation.clean_correct.sum()
                                                                   - report.per_sample["robust"].sum())
    later = report.per_attack[1:]
    assert all(r["attacked"] <= report.per_attack[0]["attacked"] for r in later)  # only survivors are attacked
    low, high = report.interval
    assert low <= report.robust_accuracy <= high
    assert "Robust accuracy" in report.verdict and "95% CI" in report.verdict
    robust = report.per_sample["robust"]
    assert np.all(report.per_sample["broken_by"][robust] == "")
    assert np.all(report.per_sample["distance"][~robust & report.evaluation.clean_correct] <= 0.15 + 1e-6)


def test_a_quantised_input_no_longer_keeps_a_high_worst_case(trained_lenet, batch):
    """round(4x)/4 gives zero input gradients: PGD keeps most samples, Square's random search does not."""
    x, y = batch
    model = UserNet(trained_lenet, transform=RoundToQuarters.apply)
    pgd = evaluate(model, (x, y), [AttackSpec("pgd", [0.3], {"steps": 20, "step_size": 0.025})], **QUIET)
    pgd_accuracy = pgd.accuracy(pgd.records[0])
    report = standard_evaluation(model, x, y, eps=0.3, overrides=FAST, diagnostics=False, **QUIET)
    assert pgd_accuracy > 0.8
    assert report.robust_accuracy < 0.2
    by_attack = {row["attack"]: row["newly_broken"] for row in report.per_attack}
    assert by_attack["square"] == max(by_attack.values())
    gradients = next(c for c in report.sanity if c.name == "gradients")
    assert gradients.status == "warn"  # and the verdict says so
    assert "gradients" in report.verdict
    # dead gradients everywhere: Square ran first, and the gradient attacks only got what it left
    assert report.per_attack[0]["attack"] == "square"
    survivors = report.per_attack[0]["attacked"] - report.per_attack[0]["newly_broken"]
    assert all(row["attacked"] <= survivors for row in report.per_attack[1:])


def test_gradient_free_attacks_go_first_only_when_gradients_are_dead_in_worst_case_mode():
    plan = standard_plan("linf", 0.3)

    def gradients(status: str, *shares: float) -> SanityCheck:
        objectives = {f"objective{i}": {"zero": 0, "nonfinite": 0, "share": share} for i, share in enumerate(shares)}
        return SanityCheck("gradients", status, "", "", "", {"objectives": objectives})

    def order(checks, mode="worst-case"):
        return [spec.attack for spec in gradient_free_first(plan, checks, mode, log=lambda _: None)]

    assert order([gradients("warn", 0.9, 0.95)]) == ["square", "apgd-ce", "apgd-t", "fab-t"]
    assert order([gradients("warn", 0.9, 0.95)], mode="protocol") == [s.attack for s in plan]
    assert order([gradients("warn", 0.9, 0.3)]) == [s.attack for s in plan]  # one objective still works
    assert order([gradients("pass", 0.0)]) == [s.attack for s in plan]
    assert order([]) == [s.attack for s in plan]


def test_a_softmax_output_model_is_flagged_and_attacked_through_log_probabilities(trained_lenet, batch):
    x, y = batch
    plan = [AttackSpec("pgd", [0.1], {"steps": 10, "step_size": 0.025})]
    plain = evaluate(UserNet(trained_lenet), (x, y), plan, **QUIET)
    probabilities = evaluate(UserNet(trained_lenet, softmax=True), (x, y), plan, **QUIET)
    flagged = {c["name"]: c["status"] for c in probabilities.meta["sanity"]}
    assert flagged["probability-outputs"] == "warn"
    assert {c["name"]: c["status"] for c in plain.meta["sanity"]}["probability-outputs"] == "pass"
    # log p is a logit vector whose softmax is p: the attack sees the same decision function as on the logits
    assert np.array_equal(plain.records[0].adv_pred, probabilities.records[0].adv_pred)
    report = standard_evaluation(UserNet(trained_lenet, softmax=True), x[:20], y[:20], eps=0.1, overrides=FAST,
                                 diagnostics=False, **QUIET)
    assert "probability-outputs" in report.verdict


def test_run_evaluation_refuses_images_outside_the_unit_box(trained_lenet, batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(trained_lenet, (x * 255, y), [], **QUIET)


def test_data_may_be_tensors_a_pair_or_a_loader(mnist5k, batch):
    x, y = batch
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    for data in ((x, y), [x, y], loader, mnist5k):
        split = as_split(data)
        assert len(split) == (len(mnist5k.test) if data is mnist5k else N)
    assert torch.equal(as_split(x[:, 0], y).images, x)  # one-channel NHW gets its channel axis
    with pytest.raises(ValueError, match="without labels"):
        as_split(x)
    with pytest.raises(ValueError, match="class indices"):
        as_split(x, y.float())
    with pytest.raises(ValueError, match="DataLoader"):
        as_split(42)


def test_run_evaluation_restores_the_callers_mode_and_records_its_checks(trained_lenet, batch):
    x, y = batch
    trained_lenet.train()
    try:
        ev = run_evaluation(trained_lenet, (x, y), EvaluateConfig(attacks=[AttackSpec("fgsm", [0.1])],
                                                                  diagnostics=True), **QUIET)
        assert trained_lenet.training  # left as it came
    finally:
        trained_lenet.eval()
    assert {c["name"]: c["status"] for c in ev.meta["sanity"]}["training-mode"] == "warn"
    assert [d.number for d in diagnostics_of(ev)] == list(range(1, 10))
    assert "gradient_probe" in ev.meta


def test_wilson_interval_matches_hand_computed_values():
    # p = 0.5, n = 100: centre 0.5, half-width 1.96 * sqrt(0.25/100 + 1.96^2/40000) / (1 + 1.96^2/100)
    low, high = wilson_interval(0.5, 100)
    half = 1.96 * (0.25 / 100 + 1.96**2 / 40000) ** 0.5 / (1 + 1.96**2 / 100)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    assert wilson_interval(0.0, 50)[0] == 0.0 and wilson_interval(0.0, 50)[1] == pytest.approx(0.0714, abs=1e-3)


def test_only_the_front_door_calls_the_engine():
    """CLI, experiment runner and standard_evaluation all go through run_evaluation: nothing else runs a plan."""
    from pathlib import Path

    import robustloss

    root = Path(robustloss.__file__).parent
    callers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if "run_plan(" in p.read_text() and p.name != "engine.py")
    assert callers == ["evaluate/run.py"]
    for path in ("cli/eval.py", "experiments/runner.py", "evaluate/standard.py"):
        assert "run_evaluation(" in (root / path).read_text()


@pytest.fixture(scope="module")
def mmc_lenet(mnist5k, tmp_path_factory):
    from robustloss.train import Phase, TrainConfig, train

    config = TrainConfig(recipe=[Phase("mmc", 4)], seed=0)
    return train(config, tmp_path_factory.mktemp("mmc"), data=mnist5k, progress=False, log=lambda _: None,
                 device="cpu").model.eval()


def test_an_mmc_model_attacked_with_ce_gets_an_honest_worst_case_at_every_eps(mmc_lenet, batch):
    """CE gradients vanish on MMC's center head; the probes at every budget bring the adaptive objective."""
    x, y = batch
    config = EvaluateConfig(attacks=[AttackSpec("pgd", [0.1, 0.2], {"steps": 20, "step_size": 0.0125,
                                                                    "objective": "ce"})], diagnostics=True)
    ev = run_evaluation(mmc_lenet, (x, y), config, **QUIET)
    for eps in (0.1, 0.2):
        ce = next(r for r in ev.records if r.attack == "pgd" and r.eps == eps and r.label == "")
        adaptive = next(r for r in ev.records if r.label == "diag-pgd-adaptive" and r.eps == eps)
        assert adaptive.objective == "mmc"
        worst = worst_case_robust(ev, "linf", eps).mean()
        assert worst <= ev.accuracy(adaptive) and worst < ev.accuracy(ce) - 0.2, (eps, worst, ev.accuracy(ce))
    checks = {d.number: d for d in diagnostics_of(ev)}
    assert "ce" in checks[7].detail  # the objective the plan used is the one probed
