"""APGD (Croce & Hein 2020) and the MMC paper's general-purpose corruptions (Gaussian noise,
random rotation): strength against the repository's PGD, budgets, the paper's checkpoint
schedule, hand-checked first steps, reproducibility, and the corruption protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import robustloss.attacks.apgd as apgd
import robustloss.attacks.corruptions as corruptions
from robustloss.attacks import ATTACKS, create_attack, preset

N_ITER = 30  # APGD and PGD get the same number of iterations


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def accuracy(result, y) -> float:
    return (result.pred == y).float().mean().item()


@pytest.fixture(scope="module")
def digits(mnist5k):
    return mnist5k.test.batch(slice(0, 100))


# ---------------------------------------------------------------- APGD


def test_checkpoints_follow_the_papers_formula():
    # p: 0, .22, .41 (= .22 + .19), .57 (+.16), .70 (+.13), .80 (+.10), .87 (+.07), .93 (+.06), .99 (+.06);
    # the next, 1.05, is past 1. w_j = ceil(100 p_j).
    assert apgd.checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # ceil(30 p_j): 6.6, 12.3, 17.1, 21, 24, 26.1, 27.9, 29.7
    assert apgd.checkpoints(30) == [0, 7, 13, 18, 21, 24, 27, 28, 30]
    assert apgd.checkpoints(1) == [0, 1]


@pytest.mark.parametrize("norm,eps,pgd", [("linf", 0.2, "pgd"), ("l2", 2.0, "pgd-l2")])
@pytest.mark.parametrize("objective", ["ce", "dlr"])
def test_apgd_is_at_least_as_strong_as_pgd(trained_lenet, digits, norm, eps, pgd, objective):
    if pgd not in ATTACKS:
        pytest.skip(f"{pgd} is not registered")
    x, y = digits
    baseline = create_attack(pgd, eps=eps, steps=N_ITER, step_size=2.5 * eps / N_ITER, objective=objective)(
        trained_lenet, x, y, generator=seeded())
    result = create_attack(f"apgd-{objective}", eps=eps, norm=norm, n_iter=N_ITER)(
        trained_lenet, x, y, generator=seeded())
    with torch.no_grad():
        clean = (trained_lenet(x).argmax(1) == y).float().mean().item()
    assert accuracy(result, y) < clean - 0.4
    assert accuracy(result, y) <= accuracy(baseline, y) + 0.02, (accuracy(result, y), accuracy(baseline, y))
    size = result.linf if norm == "linf" else result.l2
    assert (size <= eps + 1e-5).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert result.objective == objective
    # an unfooled sample used every evaluation, x(0) .. x(N_ITER); a fooled one at most that
    assert (result.queries[~result.success] == N_ITER + 1).all()
    assert (result.queries[result.success] <= N_ITER + 1).all() and (result.queries >= 1).all()


def test_targeted_apgd_reaches_targets(trained_lenet, digits):
    x, y = digits
    target = (y + 1) % 10
    attack = create_attack("apgd-dlr", eps=0.3, n_iter=N_ITER, targeted=True)
    result = attack(trained_lenet, x, y, target=target, generator=seeded())
    assert (result.pred == target).float().mean().item() > 0.5  # chance is 0.1
    assert torch.equal(result.success, result.pred == target)
    with pytest.raises(ValueError, match="target"):
        attack(trained_lenet, x, y)


def test_first_two_steps_by_hand(tiny_model):
    """n_iter = 2, no random start: x1 = P(x0 + 2 eps sign g0); the checkpoint at k = 1 (ceil(0.22 * 2))
    keeps eta when f rose; then x2 = P(x1 + a (z2 - x1) + (1 - a)(x1 - x0)), z2 = P(x1 + 2 eps sign g1).
    The attack returns the first fooling iterate, else the one with the highest objective."""
    torch.manual_seed(4)
    x = torch.rand(16, 1, 28, 28) * 0.6 + 0.2
    with torch.no_grad():
        y = tiny_model(x).argmax(1)  # x0 is never fooled
    eps, a = 0.03, 0.75

    def project(z):
        return torch.min(torch.max(z, x - eps), x + eps).clamp(0, 1)

    def evaluate(z):
        z = z.clone().requires_grad_(True)
        logits = tiny_model(z)
        loss = F.cross_entropy(logits, y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), grad, logits.argmax(1) != y

    f0, g0, _ = evaluate(x)
    x1 = project(x + 2 * eps * g0.sign())
    f1, g1, fooled1 = evaluate(x1)
    z2 = project(x1 + 2 * eps * g1.sign())
    x2 = project(x1 + a * (z2 - x1) + (1 - a) * (x1 - x))
    f2, _, fooled2 = evaluate(x2)

    result = create_attack("apgd-ce", eps=eps, n_iter=2, random_start=False)(tiny_model, x, y)
    rose = f1 > f0  # these keep eta = 2 eps and x1 at the checkpoint
    assert rose.any()
    stack, gains = torch.stack([x, x1, x2]), torch.stack([f0, f1, f2])
    expected = stack[gains.argmax(0), torch.arange(len(x))]
    expected = torch.where(fooled2.view(-1, 1, 1, 1), x2, expected)
    expected = torch.where(fooled1.view(-1, 1, 1, 1), x1, expected)
    assert torch.allclose(result.x_adv[rose], expected[rose], atol=1e-6)


def test_fixed_seed_gives_identical_results(trained_lenet, digits):
    x, y = digits[0][:50], digits[1][:50]
    for norm, eps in [("linf", 0.1), ("l2", 1.0)]:
        attack = create_attack("apgd-ce", eps=eps, norm=norm, n_iter=10)
        a = attack(trained_lenet, x, y, generator=seeded(7))
        b = attack(trained_lenet, x, y, generator=seeded(7))
        c = attack(trained_lenet, x, y, generator=seeded(8))
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
        assert not torch.equal(a.x_adv, c.x_adv)


def test_restarts_only_help(trained_lenet, digits):
    x, y = digits[0][:50], digits[1][:50]
    one = create_attack("apgd-ce", eps=0.1, n_iter=5)(trained_lenet, x, y, generator=seeded())
    three = create_attack("apgd-ce", eps=0.1, n_iter=5, restarts=3)(trained_lenet, x, y, generator=seeded())
    assert three.success.sum() >= one.success.sum()  # the first restart is the single run
    assert (three.queries[~three.success] == 3 * 6).all()  # 3 runs x (n_iter + 1) evaluations


def test_model_is_left_untouched(trained_lenet, digits):
    x, y = digits[0][:20], digits[1][:20]
    before = {k: v.clone() for k, v in trained_lenet.state_dict().items()}
    trained_lenet.train()
    for name in ("apgd-ce", "apgd-dlr"):
        create_attack(name, eps=0.1, n_iter=3)(trained_lenet, x, y, generator=seeded())
    assert trained_lenet.training, "the model's mode must be restored"
    trained_lenet.eval()
    for key, value in trained_lenet.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in trained_lenet.parameters())


def test_generic_apgd_takes_any_objective(trained_lenet, digits):
    x, y = digits[0][:20], digits[1][:20]
    result = create_attack("apgd", eps=0.1, n_iter=3, objective="adaptive")(trained_lenet, x, y, generator=seeded())
    assert result.objective in ("ce", "cw", "dlr", "mmc")
    assert create_attack("apgd", eps=0.1, norm="l2").norm == "l2"  # per-instance norm, read by the budget check


def test_apgd_defaults_validation_and_presets():
    attack = create_attack("apgd-ce", eps=0.3)
    assert attack.hyperparameters() == {"eps": 0.3, "targeted": False, "objective": "ce", "norm": "linf",
                                        "n_iter": 100, "restarts": 1, "random_start": True, "alpha": 0.75,
                                        "rho": 0.75}
    rebuilt = create_attack("apgd-ce", **attack.hyperparameters())
    assert rebuilt.hyperparameters() == attack.hyperparameters()
    assert create_attack("apgd-dlr", eps=0.3).objective_name == "dlr"
    with pytest.raises(ValueError, match="norm"):
        create_attack("apgd", eps=0.3, norm="l1")
    with pytest.raises(ValueError, match="n_iter"):
        create_attack("apgd", eps=0.3, n_iter=0)
    with pytest.raises(ValueError, match="random_start"):
        create_attack("apgd", eps=0.3, restarts=2, random_start=False)
    with pytest.raises(ValueError, match="apgd"):
        create_attack("apgd-ce", eps=0.3, objective="cw")
    with pytest.raises(ValueError, match="eps"):
        create_attack("apgd", eps=None)
    for name, attack_name in [("apgd-ce-autoattack", "apgd-ce"), ("apgd-dlr-autoattack", "apgd-dlr")]:
        p = preset(name)
        assert p.attack == attack_name and p.params == {"n_iter": 100, "restarts": 1}
        create_attack(p.attack, eps=0.3, **p.params)


# ---------------------------------------------------------------- Gaussian noise


def test_zero_noise_leaves_images_unchanged(trained_lenet, digits):
    x, y = digits
    result = create_attack("gaussian-noise", sigma=0.0)(trained_lenet, x, y, generator=seeded())
    assert torch.equal(result.x_adv, x)
    assert create_attack("gaussian-noise", eps=0.0).sigma == 0.0  # eps is an alias for sigma


def test_stronger_noise_fools_more_and_stays_in_the_box(trained_lenet, digits):
    x, y = digits
    mild = create_attack("gaussian-noise", sigma=0.05)(trained_lenet, x, y, generator=seeded())
    heavy = create_attack("gaussian-noise", sigma=0.6)(trained_lenet, x, y, generator=seeded())
    assert accuracy(heavy, y) < accuracy(mild, y) - 0.2
    assert heavy.x_adv.min() >= 0 and heavy.x_adv.max() <= 1
    assert (heavy.queries == 1).all()
    # the noise has standard deviation sigma where clipping does not bite (4 sigma from 0 and 1)
    inside = (x > 0.2) & (x < 0.8)
    noise = (mild.x_adv - x)[inside]
    assert noise.numel() > 1000
    assert noise.std().item() == pytest.approx(0.05, rel=0.1) and abs(noise.mean().item()) < 0.005


def test_noise_is_reproducible_and_worst_of_k_only_adds(trained_lenet, digits):
    x, y = digits
    attack = create_attack("gaussian-noise", sigma=0.4)
    a = attack(trained_lenet, x, y, generator=seeded(3))
    b = attack(trained_lenet, x, y, generator=seeded(3))
    c = attack(trained_lenet, x, y, generator=seeded(4))
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)
    five = create_attack("gaussian-noise", sigma=0.4, draws=5)(trained_lenet, x, y, generator=seeded(3))
    assert (five.success | ~a.success).all()  # draw 1 is the single draw; its fooling samples are kept
    assert five.success.sum() >= a.success.sum()
    assert five.queries.min() >= 1 and five.queries.max() <= 5
    assert (five.queries[~five.success] == 5).all()


def test_corruption_parameters_and_presets():
    with pytest.raises(ValueError, match="alias"):
        create_attack("gaussian-noise", eps=0.1, sigma=0.2)
    with pytest.raises(ValueError, match="draws"):
        create_attack("gaussian-noise", draws=0)
    with pytest.raises(ValueError, match="max_degrees"):
        create_attack("rotation", max_degrees=200)
    noise = create_attack("gaussian-noise")
    assert (noise.sigma, noise.draws, noise.norm) == (0.05, 1, None)  # MMC paper, Table 2
    assert noise.hyperparameters() == {"eps": 0.05, "sigma": 0.05, "draws": 1, "targeted": False}
    assert create_attack("gaussian-noise", **noise.hyperparameters()).sigma == 0.05
    rotation = create_attack("rotation")
    assert (rotation.max_degrees, rotation.norm) == (30.0, None)
    assert create_attack("rotation", eps=15).max_degrees == 15.0
    assert preset("noise-mmc").params == {"sigma": 0.05, "draws": 1}
    assert preset("rotation-mmc").params == {"max_degrees": 30.0, "draws": 1}


# ---------------------------------------------------------------- rotation


def test_zero_rotation_is_the_identity(trained_lenet, digits):
    x, y = digits
    assert torch.allclose(corruptions.rotate(x, torch.zeros(len(x))), x, atol=1e-5)  # grid round-off
    result = create_attack("rotation", max_degrees=0)(trained_lenet, x, y, generator=seeded())
    assert torch.allclose(result.x_adv, x, atol=1e-5)


def test_quarter_turn_matches_rot90():
    # an asymmetric image: a bright bar along the top and a dot near the right edge
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 3, 5:20] = 0.8
    image[0, 0, 15, 24] = 0.7
    image = image + torch.linspace(0, 0.2, 28).view(1, 1, 1, 28)  # and a horizontal ramp; all in [0, 1]
    turned = corruptions.rotate(image, torch.tensor([90.0]))
    expected = torch.rot90(image, 1, dims=(-2, -1))  # counter-clockwise
    inner = (slice(None), slice(None), slice(2, 26), slice(2, 26))
    assert torch.allclose(turned[inner], expected[inner], atol=1e-4)
    back = corruptions.rotate(image, torch.tensor([-90.0]))
    assert torch.allclose(back[inner], torch.rot90(image, -1, dims=(-2, -1))[inner], atol=1e-4)


def test_random_rotation_lowers_accuracy_and_is_reproducible(trained_lenet, digits):
    x, y = digits
    attack = create_attack("rotation", max_degrees=30)
    a = attack(trained_lenet, x, y, generator=seeded())
    b = attack(trained_lenet, x, y, generator=seeded())
    assert torch.equal(a.x_adv, b.x_adv)
    assert a.x_adv.min() >= 0 and a.x_adv.max() <= 1
    worst_of_5 = create_attack("rotation", max_degrees=30, draws=5)(trained_lenet, x, y, generator=seeded())
    with torch.no_grad():
        clean = (trained_lenet(x).argmax(1) == y).float().mean().item()
    assert accuracy(a, y) <= clean
    assert accuracy(worst_of_5, y) < clean - 0.05
    assert (worst_of_5.success | ~a.success).all()
