"""C&W L2 and DeepFool: they fool a trained LeNet, stay in [0, 1] and within eps, leave the model
untouched, behave as their papers describe (binary search, confidence, targets, iterations),
DeepFool's step is exact on a linear model, and both are reproducible."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import robustloss.attacks.carlini_wagner as carlini_wagner  # importing registers "cw"
import robustloss.attacks.deepfool  # noqa: F401  (registers "deepfool")
from robustloss.attacks.carlini_wagner import distortion_summary
from robustloss.attacks.objectives import logit_margin
from robustloss.attacks.presets import preset
from robustloss.attacks.registry import create_attack

# A short but effective C&W for the tests: a large Adam step, few search steps.
FAST_CW = {"binary_search_steps": 4, "steps": 40, "lr": 0.1, "initial_const": 1.0}


@pytest.fixture(scope="module")
def digits(mnist5k):
    return mnist5k.test.batch(slice(0, 100))


@pytest.fixture(scope="module")
def cw_digits(digits):
    return digits[0][:50], digits[1][:50]


@pytest.fixture(scope="module")
def cw_result(trained_lenet, cw_digits):
    x, y = cw_digits
    return create_attack("cw", **FAST_CW)(trained_lenet, x, y)


@pytest.fixture(scope="module")
def deepfool_result(trained_lenet, digits):
    x, y = digits
    return create_attack("deepfool")(trained_lenet, x, y)


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# --- C&W -------------------------------------------------------------------------------------


def test_cw_unbounded_fools_nearly_all(trained_lenet, cw_digits, cw_result):
    x, y = cw_digits
    r = cw_result
    assert accuracy(trained_lenet, x, y) > 0.8
    assert r.success.float().mean() >= 0.9
    assert (r.pred == y).float().mean() <= 0.1
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.objective == "cw"
    assert r.queries.dtype == torch.int64 and (r.queries >= 1).all()
    assert (r.queries <= 1 + FAST_CW["binary_search_steps"] * FAST_CW["steps"]).all()
    # Misclassified digits are fooled already: returned exactly, after one forward pass.
    with torch.no_grad():
        wrong = trained_lenet(x).argmax(1) != y
    assert wrong.any()
    assert torch.equal(r.x_adv[wrong], x[wrong]) and (r.queries[wrong] == 1).all()
    summary = distortion_summary(r.l2, r.success)
    assert summary["n"] == int(r.success.sum()) and 0 < summary["median"] < 5


def test_cw_more_binary_search_steps_do_not_increase_distortion(trained_lenet, cw_digits, cw_result):
    x, y = cw_digits
    one = create_attack("cw", **(FAST_CW | {"binary_search_steps": 1}))(trained_lenet, x, y)
    more = cw_result  # 4 search steps; the first one is the same run as `one`
    assert not (one.success & ~more.success).any(), "more search steps lost a success"
    both = one.success & more.success
    assert both.sum() >= 15
    assert (more.l2[both] <= one.l2[both] + 1e-6).all()
    assert more.l2[both].mean() < one.l2[both].mean()
    assert (more.l2[both] < 0.9 * one.l2[both]).sum() >= 3  # smaller c found closer examples
    assert more.success.sum() > one.success.sum()


def test_cw_targeted_reaches_targets(trained_lenet, cw_digits):
    x, y = cw_digits
    target = (y + 1) % 10
    attack = create_attack("cw", targeted=True, **FAST_CW)
    r = attack(trained_lenet, x, y, target=target)
    assert (r.pred == target).float().mean() > 0.6  # chance is 0.1
    assert torch.equal(r.success, r.pred == target)
    with pytest.raises(ValueError, match="target"):
        attack(trained_lenet, x, y)


def test_cw_confidence_gives_larger_margins(trained_lenet, cw_digits, cw_result):
    x, y = cw_digits
    kappa = 5.0
    r = create_attack("cw", confidence=kappa, **FAST_CW)(trained_lenet, x, y)
    with torch.no_grad():
        margin = logit_margin(trained_lenet(r.x_adv), y, False)  # max_{j!=y} Z_j - Z_y
        plain = logit_margin(trained_lenet(cw_result.x_adv), y, False)
    assert r.success.float().mean() > 0.7
    assert (margin[r.success] >= kappa - 1e-3).all()
    both = r.success & cw_result.success
    assert margin[both].mean() > plain[both].mean() + kappa / 2
    assert r.l2[both].mean() > cw_result.l2[both].mean()  # confidence costs distortion


def test_cw_eps_bound_is_respected(trained_lenet, cw_digits, cw_result):
    x, y = cw_digits
    eps = 1.0
    r = create_attack("cw", eps=eps, **FAST_CW)(trained_lenet, x, y)
    assert (r.l2 <= eps + 1e-5).all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert 0 < r.success.sum() < cw_result.success.sum()
    assert torch.equal(r.x_adv[~r.success], x[~r.success])  # failures come back clean


def test_distortion_summary_by_hand():
    l2 = torch.tensor([1.0, 2.0, 30.0, 4.0, 10.0])
    success = torch.tensor([True, True, False, True, True])
    summary = distortion_summary(l2, success)
    assert summary["n"] == 4
    assert summary["mean"] == pytest.approx(17 / 4)
    assert summary["median"] == pytest.approx(3.0)  # (2 + 4) / 2
    empty = distortion_summary(l2, torch.zeros(5, dtype=torch.bool))
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["median"])


def test_cw_tanh_space_round_trip_stays_in_the_box():
    x = torch.tensor([0.0, 1e-7, 0.5, 1 - 1e-7, 1.0]).view(1, 1, 1, 5)
    back = carlini_wagner.from_tanh_space(carlini_wagner.to_tanh_space(x))
    assert torch.isfinite(carlini_wagner.to_tanh_space(x)).all()
    assert back.min() >= 0 and back.max() <= 1
    assert torch.allclose(back, x, atol=1e-6)


# --- DeepFool --------------------------------------------------------------------------------


def test_deepfool_unbounded_fools_nearly_all(trained_lenet, digits, deepfool_result):
    x, y = digits
    r = deepfool_result
    assert r.success.float().mean() >= 0.95
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert (r.queries >= 1).all() and (r.queries <= 51).all()
    # Misclassified digits are fooled already: returned unchanged after one forward pass.
    with torch.no_grad():
        wrong = trained_lenet(x).argmax(1) != y
    assert wrong.any()
    assert torch.equal(r.x_adv[wrong], x[wrong]) and (r.queries[wrong] == 1).all()
    # Minimal perturbations on MNIST LeNets are around 1-2 in L2 (measured median ~1.4).
    assert distortion_summary(r.l2, r.success)["median"] < 3


def test_deepfool_more_iterations_more_success(trained_lenet, digits, deepfool_result):
    x, y = digits
    one = create_attack("deepfool", max_iter=1)(trained_lenet, x, y)
    assert (one.queries <= 2).all()
    assert deepfool_result.success.sum() > one.success.sum() + 30


def test_deepfool_eps_projection(trained_lenet, digits, deepfool_result):
    x, y = digits
    eps = 1.0
    r = create_attack("deepfool", eps=eps)(trained_lenet, x, y)
    assert (r.l2 <= eps + 1e-5).all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.success.sum() < deepfool_result.success.sum()
    # Points already within the ball are not moved by the projection.
    inside = deepfool_result.success & (deepfool_result.l2 <= eps)
    assert inside.any()
    assert torch.equal(r.x_adv[inside], deepfool_result.x_adv[inside])
    assert r.success[inside].all()
    # The others are scaled onto the sphere, in the same direction.
    outside = deepfool_result.l2 > eps
    assert torch.allclose(r.l2[outside], torch.full_like(r.l2[outside], eps), atol=1e-4)


class Linear(nn.Module):
    """Logits W x + b on the flattened image."""

    def __init__(self, weight, bias):
        super().__init__()
        self.layer = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.layer.weight.copy_(weight)
            self.layer.bias.copy_(bias)

    def forward(self, x):
        return self.layer(x.flatten(1))


def test_deepfool_step_is_exact_on_a_linear_binary_model():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 16, generator=g) * 0.5
    x = (0.5 + 0.05 * torch.randn(6, 1, 4, 4, generator=g)).clamp(0, 1)
    with torch.no_grad():
        raw = x.flatten(1) @ weight.T
    # Biases put every sample a small margin away from the boundary.
    bias = torch.tensor([0.0, -float((raw[:, 1] - raw[:, 0]).mean())])
    model = Linear(weight, bias).eval()
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    assert len(set(y.tolist())) == 2, "want samples on both sides"

    overshoot = 0.02
    r = create_attack("deepfool", overshoot=overshoot)(model, x, y)
    assert r.success.all() and (r.queries == 2).all()  # one linearisation, one check

    # Analytic minimal L2 perturbation to the hyperplane (Z_other - Z_y)(x) = 0.
    other = 1 - y
    w = weight[other] - weight[y]  # (N, 16)
    f = logits.gather(1, other[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
    w_norm = w.norm(dim=1, keepdim=True)
    distance = f.abs()[:, None] / w_norm
    expected = (1 + overshoot) * (distance + 1e-4) * w / w_norm
    assert (r.x_adv > 0).all() and (r.x_adv < 1).all(), "the test wants no clipping"
    assert torch.allclose((r.x_adv - x).flatten(1), expected, atol=1e-6)
    assert torch.allclose(r.l2, (1 + overshoot) * (distance.squeeze(1) + 1e-4), atol=1e-6)
    # Without the overshoot the step lands 1e-4 (in L2) past the hyperplane.
    landed = x.flatten(1) + expected / (1 + overshoot)
    margin = ((landed * w).sum(1) + (f - (x.flatten(1) * w).sum(1))) / w_norm.squeeze(1)
    assert torch.allclose(margin, torch.full_like(margin, 1e-4), atol=1e-6)


def test_deepfool_picks_the_nearest_of_several_boundaries():
    # Three classes; from x = 0.5 * ones, class 0 wins; class 2's boundary is the closer one.
    weight = torch.zeros(3, 4)
    weight[1, 0] = 1.0  # Z_1 - Z_0 = x_0 - 1.5: distance 1.0 along e_0
    weight[2, 1] = 2.0  # Z_2 - Z_0 = 2 x_1 - 1.5: distance 0.25 along e_1
    bias = torch.tensor([1.5, 0.0, 0.0])
    model = Linear(weight, bias).eval()
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])
    r = create_attack("deepfool", overshoot=0.0)(model, x, y)
    assert r.pred.item() == 2
    delta = (r.x_adv - x).flatten()
    assert torch.allclose(delta, torch.tensor([0.0, 0.25 + 1e-4, 0.0, 0.0]), atol=1e-6)


# --- Both ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,params", [("cw", {"binary_search_steps": 2, "steps": 10, "lr": 0.1}),
                                         ("deepfool", {"max_iter": 5})])
def test_model_is_left_untouched(trained_lenet, digits, name, params):
    x, y = digits[0][:20], digits[1][:20]
    before = {k: v.clone() for k, v in trained_lenet.state_dict().items()}
    for p in trained_lenet.parameters():
        p.grad = None
    trained_lenet.train()
    create_attack(name, **params)(trained_lenet, x, y)
    assert trained_lenet.training, "the model's mode must be restored"
    trained_lenet.eval()
    for key, value in trained_lenet.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in trained_lenet.parameters())


@pytest.mark.parametrize("name,params", [("cw", {"binary_search_steps": 2, "steps": 10, "lr": 0.1}),
                                         ("deepfool", {"max_iter": 5})])
def test_same_inputs_give_identical_outputs(trained_lenet, digits, name, params):
    x, y = digits[0][:20], digits[1][:20]
    attack = create_attack(name, **params)
    a, b = attack(trained_lenet, x, y), attack(trained_lenet, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


@pytest.mark.parametrize("name,params,match", [
    ("cw", {"binary_search_steps": 0}, "binary_search_steps"),
    ("cw", {"steps": 0}, "steps"),
    ("cw", {"lr": 0.0}, "lr"),
    ("cw", {"initial_const": -1.0}, "initial_const"),
    ("cw", {"confidence": -1.0}, "confidence"),
    ("cw", {"objective": "ce"}, "logit margin"),
    ("cw", {"eps": -1.0}, "eps"),
    ("deepfool", {"targeted": True}, "untargeted"),
    ("deepfool", {"max_iter": 0}, "max_iter"),
    ("deepfool", {"overshoot": -0.1}, "overshoot"),
    ("deepfool", {"candidates": 1}, "candidates"),
    ("deepfool", {"objective": "dlr"}, "objective"),
])
def test_invalid_parameters_are_rejected(name, params, match):
    with pytest.raises(ValueError, match=match):
        create_attack(name, **params)


def test_defaults_hyperparameters_and_presets():
    cw = create_attack("cw")
    assert cw.norm == "l2" and cw.eps is None
    assert cw.hyperparameters() == {
        "eps": None, "targeted": False, "objective": "cw", "binary_search_steps": 9, "initial_const": 0.01,
        "steps": 100, "lr": 0.001, "confidence": 0.0, "abort_early": True,
    }
    assert create_attack("cw", objective="adaptive").hyperparameters()["objective"] == "cw"
    deepfool = create_attack("deepfool")
    assert deepfool.norm == "l2" and deepfool.hyperparameters() == {
        "eps": None, "targeted": False, "objective": "cw", "max_iter": 50, "overshoot": 0.02, "candidates": 10,
    }
    assert preset("cw-mmc").params == {"binary_search_steps": 9, "initial_const": 0.01, "steps": 1000, "lr": 0.005}
    assert preset("cw-pc-100").params["steps"] == 100 and preset("cw-pc-1000").params["steps"] == 1000
    for name, iters in [("mnist-10", 10), ("mnist-50", 50), ("cifar-3", 3), ("cifar-20", 20)]:
        p = preset(f"deepfool-isce-{name}")
        assert p.attack == "deepfool" and p.params == {"max_iter": iters, "overshoot": 0.02}
    for name in ["cw-mmc", "cw-pc-100", "cw-pc-1000", "deepfool-isce-mnist-10"]:
        p = preset(name)
        assert p.source
        create_attack(p.attack, **p.params)  # every preset builds
