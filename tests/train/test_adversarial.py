"""Adversarial training: its config, the per-example-eps perturbation, batch mixing, and that
AT actually buys robustness."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from robustloss.attacks import create_attack
from robustloss.config import from_dict, to_dict
from robustloss.errors import ConfigError
from robustloss.losses import create_loss
from robustloss.models.classifier import Classifier
from robustloss.train import AdversarialConfig, Phase, TrainConfig, train
from robustloss.train.adversarial import AdversarialTraining, adversarial_count

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


@pytest.fixture(scope="module")
def test_batch(mnist5k):
    return mnist5k.test.batch(slice(0, 200))


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "adversarial, message",
    [
        ({"eps": [0.3, 0.1]}, r"adversarial.eps: range must be ordered"),
        ({"eps": -0.1}, r"adversarial.eps: bounds must be finite numbers >= 0"),
        ({"eps": [-0.1, 0.2]}, r"adversarial.eps: bounds must be finite numbers >= 0"),
        ({"eps": [0.1, 0.2, 0.3]}, r"adversarial.eps: expected a number or \[lo, hi\]"),
        ({"eps": "big"}, r"adversarial.eps: 'big' matches none"),
        ({"ratio": 0}, r"adversarial.ratio must be in \(0, 1\]"),
        ({"ratio": 1.5}, r"adversarial.ratio must be in \(0, 1\]"),
        ({"steps": 0}, r"adversarial.steps must be >= 1"),
        ({"method": "fgsm", "steps": 3}, r"adversarial.steps: fgsm takes exactly one step"),
        ({"step_size": 0}, r"adversarial.step_size must be a finite number > 0"),
        ({"method": "bim"}, r"adversarial.method: expected one of 'fgsm', 'fgsm-rs', 'pgd', 'trades'"),
        ({"objective": "xent"}, r"adversarial.objective: unknown attack objective 'xent'"),
        ({"phases": [-1]}, r"adversarial.phases: indices must be >= 0"),
        ({"phases": [0, 2]}, r"adversarial.phases: \[0, 2\] names a phase past the recipe's 2 phases"),
        ({"epsilon": 0.3}, r"adversarial.epsilon: unknown key; valid keys here: method, eps"),
    ],
)
def test_adversarial_config_errors_name_the_field(adversarial, message):
    raw = {"recipe": [{"loss": "ce", "epochs": 1}, {"loss": "pc", "epochs": 1}], "adversarial": adversarial}
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, raw)


def test_max_train_samples_must_be_positive():
    with pytest.raises(ConfigError, match=r"max_train_samples must be >= 1"):
        from_dict(TrainConfig, {"max_train_samples": 0})


def test_adversarial_block_loads_from_yaml():
    text = """
    recipe:
      - {loss: ce, epochs: 2}
      - {loss: pc, epochs: 2}
    max_train_samples: 2000
    adversarial:
      method: fgsm
      eps: [0.1, 0.3]
      ratio: 0.5
      objective: adaptive
      phases: [0, 1]
    """
    config = from_dict(TrainConfig, yaml.safe_load(text))
    at = config.adversarial
    assert at == AdversarialConfig(method="fgsm", eps=[0.1, 0.3], objective="adaptive", phases=[0, 1])
    assert at.eps_range == (0.1, 0.3) and at.resolved_steps == 1 and at.resolved_random_start is False
    assert config.max_train_samples == 2000
    assert from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(config)))) == config


def test_defaults_resolve_per_method_and_leave_old_configs_alone():
    pgd = AdversarialConfig(eps=8 / 255)
    assert (pgd.resolved_steps, pgd.resolved_random_start, pgd.eps_range) == (10, True, (8 / 255, 8 / 255))
    assert AdversarialConfig(eps=1).eps == 1.0 and isinstance(AdversarialConfig(eps=1).eps, float)
    assert AdversarialConfig(phases=[1]).applies_to(1) and not AdversarialConfig(phases=[1]).applies_to(0)
    plain = TrainConfig()
    assert plain.adversarial is None and plain.max_train_samples is None


# --- the attack engine with per-example budgets -------------------------------------------------


def test_pgd_stays_in_each_examples_ball_and_the_image_box(trained_lenet, test_batch):
    x, y = test_batch
    eps = torch.linspace(0, 0.3, len(y))
    eps[::7] = 0.0
    attack = create_attack("pgd", eps=0.3, steps=5, step_size=None, relative_step=0.5, early_stop=False)
    x_adv = attack.craft(trained_lenet, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    linf = (x_adv - x).flatten(1).abs().amax(1)
    assert (linf <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv[eps == 0], x[eps == 0])
    assert (linf[eps > 0.05] > 0.5 * eps[eps > 0.05]).all()  # the budget is actually used


def test_per_example_budgets_equal_one_call_per_budget(trained_lenet, test_batch):
    """A call with per-sample eps gives each sample what a call at its own eps alone gives it."""
    x, y = test_batch[0][:60], test_batch[1][:60]
    budgets = torch.tensor([0.05, 0.15, 0.3]).repeat_interleave(20)
    for name, params in [("fgsm", {}), ("pgd", {"steps": 5, "step_size": None, "relative_step": 0.5,
                                                "random_start": False}), ("pgd-l2", {"steps": 5})]:
        scale = 10.0 if name == "pgd-l2" else 1.0
        mixed = create_attack(name, eps=0.3 * scale, early_stop=False, **params).craft(
            trained_lenet, x, y, eps=budgets * scale)
        for eps in (0.05, 0.15, 0.3):
            rows = budgets == eps
            attack = create_attack(name, eps=eps * scale, early_stop=False, **params)
            alone = attack.craft(trained_lenet, x[rows], y[rows])
            if name == "pgd-l2":  # its step is 2.5 eps / steps for its own eps, a fixed number per call
                continue
            assert torch.allclose(mixed[rows], alone, atol=1e-6), (name, eps)


def test_per_sample_eps_is_refused_where_an_attack_has_one_budget(trained_lenet, test_batch):
    x, y = test_batch[0][:4], test_batch[1][:4]
    with pytest.raises(ValueError, match="one budget for the whole batch"):
        create_attack("apgd-ce", eps=0.3).craft(trained_lenet, x, y, eps=torch.full((4,), 0.1))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        create_attack("pgd", eps=0.3).craft(trained_lenet, x, y, eps=torch.full((3,), 0.1))
    with pytest.raises(ValueError, match="finite and >= 0"):
        create_attack("pgd", eps=0.3).craft(trained_lenet, x, y, eps=torch.tensor([0.1, -0.1, 0.1, 0.1]))


def test_fgsm_in_training_is_the_evaluation_fgsm_and_hurts_accuracy(trained_lenet, test_batch):
    x, y = test_batch
    config = AdversarialConfig(method="fgsm", eps=0.3, ratio=1.0, objective="ce")
    x_adv, count = AdversarialTraining(config, create_loss("ce"), trained_lenet)(x, y, torch.Generator())
    reference = create_attack("fgsm", eps=0.3)(trained_lenet, x, y).x_adv
    with torch.no_grad():
        correct = trained_lenet(x).argmax(1) == y  # the evaluation attack leaves the others as they are
    assert count == len(y)
    assert torch.equal(x_adv[correct], reference[correct])
    assert not torch.equal(x_adv[~correct], x[~correct])  # training pushes the misclassified ones too
    assert accuracy(trained_lenet, x, y) > 0.9
    assert accuracy(trained_lenet, x_adv, y) < 0.5


@pytest.mark.parametrize("objective", ["loss", "cw", "adaptive"])
def test_targeted_training_examples_move_predictions_to_the_targets(trained_lenet, test_batch, objective):
    x, y = test_batch
    config = AdversarialConfig(method="pgd", eps=0.3, steps=10, step_size=0.075, random_start=False, ratio=1.0,
                               objective=objective, targeted=True)
    hook = AdversarialTraining(config, create_loss("ce"), trained_lenet)
    target = hook.draw_targets(y, torch.Generator().manual_seed(1))
    x_adv = hook.craft(x, y, torch.full((len(y),), 0.3), torch.Generator(), target)

    def hit(images):
        return float((trained_lenet(images).argmax(1) == target).float().mean())

    with torch.no_grad():
        assert hit(x) < 0.05
        assert hit(x_adv) > 0.5


def test_the_loss_objective_is_the_phases_loss_on_the_train_mode_head(trained_lenet, test_batch):
    """``objective: loss`` ascends the training loss itself: for CE it is the CE objective exactly."""
    x, y = test_batch[0][:50], test_batch[1][:50]
    eps = torch.full((50,), 0.2)
    crafted = {}
    for objective in ("loss", "ce"):
        config = AdversarialConfig(method="pgd", eps=0.2, steps=3, ratio=1.0, objective=objective)
        hook = AdversarialTraining(config, create_loss("ce"), trained_lenet)
        crafted[objective] = hook.craft(x, y, eps, torch.Generator().manual_seed(0))
    assert torch.equal(crafted["loss"], crafted["ce"])
    hook = AdversarialTraining(AdversarialConfig(method="fgsm", eps=0.2), create_loss("ce"), trained_lenet)
    with pytest.raises(RuntimeError, match="inside watching"):
        hook.objective(trained_lenet(x), y, False)  # outside a craft no features were seen


def test_no_parameter_gradients_and_mode_and_batchnorm_statistics_kept():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8))
    model = Classifier(backbone, feature_dim=8, num_classes=3).train()
    bn = backbone[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    for method, objective in (("pgd", "cw"), ("fgsm", "loss")):
        config = AdversarialConfig(method=method, eps=0.1, steps=3 if method == "pgd" else None, ratio=1.0,
                                   objective=objective)
        AdversarialTraining(config, create_loss("ce"), model)(x, y, torch.Generator().manual_seed(0))
        assert model.training and bn.training
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
        assert int(bn.num_batches_tracked) == before[2]
    model.eval()
    AdversarialTraining(AdversarialConfig(method="fgsm", eps=0.1, ratio=1.0), create_loss("ce"), model)(
        x, y, torch.Generator())
    assert not model.training


# --- mixing ----------------------------------------------------------------------------------


def changed(a, b):
    return (a != b).flatten(1).any(1)


@pytest.mark.parametrize("ratio, n, expected", [(0.5, 10, 5), (0.3, 10, 3), (0.5, 5, 3), (1.0, 7, 7), (0.01, 10, 0)])
def test_adversarial_count_rounds_half_up(ratio, n, expected):
    assert adversarial_count(n, ratio) == expected


@pytest.mark.parametrize("ratio", [0.5, 0.3, 1.0])
def test_mixing_replaces_exactly_the_first_round_ratio_n_examples(trained_lenet, test_batch, ratio):
    x, y = test_batch[0][:40], test_batch[1][:40]
    config = AdversarialConfig(method="fgsm", eps=[0.1, 0.3], ratio=ratio, objective="ce")
    mixed, count = AdversarialTraining(config, create_loss("ce"), trained_lenet)(x, y, torch.Generator().manual_seed(0))
    expected = adversarial_count(40, ratio)
    assert count == expected and mixed.shape == x.shape
    assert changed(mixed, x).tolist() == [True] * expected + [False] * (40 - expected)


def test_mixing_draws_eps_from_the_generator_reproducibly(trained_lenet, test_batch):
    x, y = test_batch
    config = AdversarialConfig(method="pgd", eps=[0.0, 0.1], steps=2, ratio=1.0, targeted=True)
    hook = AdversarialTraining(config, create_loss("pc"), trained_lenet)
    a, _ = hook(x, y, torch.Generator().manual_seed(5))
    b, _ = hook(x, y, torch.Generator().manual_seed(5))
    c, _ = hook(x, y, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    linf = (a - x).flatten(1).abs().amax(1)
    assert linf.max() <= 0.1 + 1e-6 and linf.std() > 0.01  # budgets differ per example
    eps = hook.draw_eps(1000, torch.Generator().manual_seed(0))
    assert eps.min() >= 0 and eps.max() <= 0.1 and abs(float(eps.mean()) - 0.05) < 0.005


def test_random_targets_are_never_the_true_class(trained_lenet):
    hook = AdversarialTraining(AdversarialConfig(targeted=True), create_loss("ce"), trained_lenet)
    y = torch.arange(10).repeat(50)
    targets = hook.draw_targets(y, torch.Generator().manual_seed(0))
    assert (targets != y).all() and set(targets.tolist()) == set(range(10))


# --- training --------------------------------------------------------------------------------


def test_fgsm_adversarial_training_raises_robust_accuracy(mnist5k, tmp_path):
    """PC paper Table 5's gray-scale setup (FGSM, eps ~ U[0.1, 0.3], 1:1 mix) at smoke scale."""
    x, y = mnist5k.test.batch(slice(0, 500))
    attack = create_attack("fgsm", eps=0.2)

    def robust_accuracy(adversarial):
        config = TrainConfig(model="lenet5", recipe=[Phase("ce", 4)], seed=0, max_train_samples=2000,
                             adversarial=adversarial)
        model = train(config, tmp_path / str(adversarial is not None), data=mnist5k, **QUIET).model
        return accuracy(model, x, y), 1 - float(attack(model, x, y).success.float().mean())

    plain_clean, plain_robust = robust_accuracy(None)
    at_clean, at_robust = robust_accuracy(AdversarialConfig(method="fgsm", eps=[0.1, 0.3], ratio=0.5))
    assert plain_clean > 0.85 and at_clean > 0.75  # both learned the task
    assert at_robust >= plain_robust + 0.15, (plain_robust, at_robust)  # seen: 0.15 vs 0.40
