"""FGSM / BIM / PGD / MIM: they lower accuracy, respect the budget and [0, 1], leave the model
untouched, reach targets, are reproducible, and match hand-checked single steps."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from robustloss.attacks import AttackBudgetWarning, create_attack
from robustloss.errors import ConfigError, UnknownNameError

NAMES = ["fgsm", "bim", "pgd", "mim"]


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, 200))


@pytest.mark.parametrize("name", NAMES)
def test_attack_lowers_accuracy_within_budget(trained_lenet, batch, name):
    x, y = batch
    eps = 0.2
    params = {} if name == "fgsm" else {"steps": 20, "step_size": 0.02}
    result = create_attack(name, eps=eps, **params)(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean_acc = (trained_lenet(x).argmax(1) == y).float().mean().item()
    adv_acc = (result.pred == y).float().mean().item()
    assert clean_acc > 0.9
    assert adv_acc < clean_acc - 0.3, f"{name}: {clean_acc:.2f} -> {adv_acc:.2f}"
    assert (result.x_adv - x).abs().max().item() <= eps + 1e-5
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.allclose(result.linf, (result.x_adv - x).flatten(1).abs().amax(1))
    assert torch.equal(result.success, result.pred != y)


@pytest.mark.parametrize("name", NAMES)
def test_model_is_left_untouched(trained_lenet, batch, name):
    x, y = batch
    before = {k: v.clone() for k, v in trained_lenet.state_dict().items()}
    for p in trained_lenet.parameters():
        p.grad = None
    trained_lenet.train()
    create_attack(name, eps=0.1)(trained_lenet, x[:20], y[:20])
    assert trained_lenet.training, "the model's mode must be restored"
    trained_lenet.eval()
    for key, value in trained_lenet.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in trained_lenet.parameters())


def test_iterative_beats_single_step(trained_lenet, batch):
    x, y = batch
    fgsm = create_attack("fgsm", eps=0.15)(trained_lenet, x, y)
    pgd = create_attack("pgd", eps=0.15, steps=20, step_size=0.015)(trained_lenet, x, y,
                                                                     generator=torch.Generator().manual_seed(0))
    assert pgd.success.float().mean() >= fgsm.success.float().mean()


@pytest.mark.parametrize("name", ["bim", "pgd", "mim"])
def test_targeted_reaches_targets_more_than_chance(trained_lenet, batch, name):
    x, y = batch
    target = (y + 1) % 10
    attack = create_attack(name, eps=0.3, steps=30, step_size=0.02, targeted=True)
    result = attack(trained_lenet, x, y, target=target, generator=torch.Generator().manual_seed(0))
    hit_rate = (result.pred == target).float().mean().item()
    assert hit_rate > 0.5  # chance is 0.1
    assert torch.equal(result.success, result.pred == target)
    with pytest.raises(ValueError, match="target"):
        attack(trained_lenet, x, y)


def test_fixed_seed_gives_identical_results(trained_lenet, batch):
    x, y = batch
    attack = create_attack("pgd", eps=0.1)
    a = attack(trained_lenet, x, y, generator=torch.Generator().manual_seed(7))
    b = attack(trained_lenet, x, y, generator=torch.Generator().manual_seed(7))
    c = attack(trained_lenet, x, y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_fgsm_is_one_signed_gradient_step(tiny_model):
    torch.manual_seed(1)
    x, y = torch.rand(4, 1, 28, 28) * 0.8 + 0.1, torch.tensor([0, 1, 2, 3])
    eps = 0.05
    xg = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(tiny_model(xg), y, reduction="sum"), xg)
    expected = (x + eps * grad.sign()).clamp(0, 1)
    result = create_attack("fgsm", eps=eps)(tiny_model, x, y)
    fooled_at_start = tiny_model(x).argmax(1) != y
    keep = ~fooled_at_start  # samples already misclassified are returned unchanged
    assert torch.allclose(result.x_adv[keep], expected[keep])
    assert torch.equal(result.x_adv[fooled_at_start], x[fooled_at_start])


def test_mim_momentum_accumulates_normalised_gradients(tiny_model):
    """Two MIM steps by hand: g1 = grad0/|grad0|_1, g2 = mu*g1 + grad1/|grad1|_1, x2 = x1 + a*sign(g2)."""
    torch.manual_seed(2)
    x = torch.rand(3, 1, 28, 28) * 0.6 + 0.2
    with torch.no_grad():
        y = tiny_model(x).argmax(1)  # start from correctly classified samples
    eps, a, mu = 0.1, 0.05, 1.0

    def grad(z):
        z = z.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(tiny_model(z), y, reduction="sum"), z)[0]

    g0 = grad(x)
    v1 = g0 / g0.abs().flatten(1).sum(1).view(-1, 1, 1, 1)
    x1 = (x + a * v1.sign()).clamp(0, 1)
    g1 = grad(x1)
    v2 = mu * v1 + g1 / g1.abs().flatten(1).sum(1).view(-1, 1, 1, 1)
    x2 = (x + (x1 + a * v2.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    result = create_attack("mim", eps=eps, steps=2, step_size=a, decay=mu)(tiny_model, x, y)
    never_fooled = (tiny_model(x).argmax(1) == y) & (tiny_model(x1).argmax(1) == y)
    assert never_fooled.any()
    assert torch.allclose(result.x_adv[never_fooled], x2[never_fooled], atol=1e-6)


def test_pgd_random_start_stays_in_ball(tiny_model):
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    with pytest.warns(AttackBudgetWarning):
        attack = create_attack("pgd", eps=0.05, steps=1, step_size=1e-6)
    result = attack(tiny_model, x, y, generator=torch.Generator().manual_seed(0))
    moved = (result.x_adv - x).abs()
    assert moved.max() <= 0.05 + 1e-6
    assert moved.mean() > 0.01  # the random start really moved the images


def test_budget_warning_when_steps_cannot_reach_eps():
    with pytest.warns(AttackBudgetWarning, match=r"10 steps x step size 0.01 = 0.1 < eps=0.3"):
        create_attack("bim", eps=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_attack("pgd", eps=0.3)  # 40 x 0.01 = 0.4 >= 0.3: no warning
        create_attack("fgsm", eps=0.3)


def test_paper_defaults():
    assert create_attack("bim", eps=0.1).hyperparameters() | {} == {
        "eps": 0.1, "targeted": False, "objective": "ce", "steps": 10, "step_size": 0.01}
    pgd = create_attack("pgd", eps=0.1)
    assert (pgd.steps, pgd.step_size, pgd.random_start) == (40, 0.01, True)
    mim = create_attack("mim", eps=0.1)
    assert (mim.steps, mim.step_size, mim.momentum) == (40, 0.01, 1.0)


def test_bad_inputs_are_rejected(tiny_model):
    with pytest.raises(UnknownNameError, match="valid attack names: .*fgsm.*pgd"):
        create_attack("cw2", eps=0.1)
    with pytest.raises(ConfigError, match="valid parameters"):
        create_attack("fgsm", eps=0.1, steps=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        create_attack("fgsm", eps=0.1)(tiny_model, torch.full((1, 1, 28, 28), 2.0), torch.tensor([0]))
    with pytest.raises(UnknownNameError, match="objective"):
        create_attack("pgd", eps=0.1, objective="hinge")


@pytest.mark.parametrize("objective", ["ce", "cw", "dlr"])
def test_objectives_drive_the_attack(trained_lenet, batch, objective):
    x, y = batch
    result = create_attack("pgd", eps=0.2, steps=20, step_size=0.02, objective=objective)(
        trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert result.success.float().mean() > 0.5


def test_pgd_l2_respects_the_l2_ball_and_lowers_accuracy(trained_lenet, batch):
    x, y = batch
    result = create_attack("pgd-l2", eps=2.0, steps=20)(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert (result.l2 <= 2.0 + 1e-4).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert (result.pred == y).float().mean() < 0.5
    assert create_attack("pgd-l2", eps=2.0, steps=20).step_size == pytest.approx(0.25)  # 2.5 * eps / steps


def test_l2_step_is_a_unit_gradient_step(tiny_model):
    torch.manual_seed(3)
    x = torch.rand(2, 1, 28, 28) * 0.5 + 0.25
    with torch.no_grad():
        y = tiny_model(x).argmax(1)
    xg = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(tiny_model(xg), y, reduction="sum"), xg)
    unit = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    result = create_attack("pgd-l2", eps=0.1, steps=1, step_size=0.1, random_start=False)(tiny_model, x, y)
    assert torch.allclose(result.x_adv, (x + 0.1 * unit).clamp(0, 1), atol=1e-6)


def test_restarts_only_help_and_are_reproducible(trained_lenet, batch):
    x, y = batch
    one = create_attack("pgd", eps=0.1, steps=5, step_size=0.02)(trained_lenet, x, y,
                                                                 generator=torch.Generator().manual_seed(0))
    five = create_attack("pgd", eps=0.1, steps=5, step_size=0.02, restarts=5)
    a = five(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    b = five(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.x_adv, b.x_adv)
    assert a.success.sum() >= one.success.sum()  # the first restart is the single run; others only add
    assert (a.linf <= 0.1 + 1e-6).all()
    # each of 4 restarts that is followed by another checks its last iterate: 5 + 1 evaluations
    assert (a.queries[~a.success] == 4 * 6 + 5 + 1).all()
    assert (a.queries[a.success] <= 4 * 6 + 5 + 1).all()
    with pytest.raises(ValueError, match="random_start"):
        create_attack("pgd", eps=0.1, restarts=3, random_start=False)


def test_stops_once_every_sample_is_fooled(trained_lenet, batch):
    x, y = batch
    calls = []
    handle = trained_lenet.register_forward_hook(lambda *a: calls.append(1))
    try:
        result = create_attack("pgd", eps=0.5, steps=200, step_size=0.05)(trained_lenet, x, y,
                                                                         generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert result.success.all()
    assert len(calls) == int(result.queries.max()) + 1 < 200  # the last success, then the final judgement
