"""Baseline losses (GCE, center loss, L-GM, ArcFace, label smoothing): hand-computed values,
limits, gradients, heads that round-trip through a saved model, and the center loss's own
trainable centers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck
from torch.func import functional_call

# Importing the modules registers them (until the lead adds them to losses/__init__.py).
import robustloss.losses.arcface  # noqa: F401
import robustloss.losses.center_loss  # noqa: F401
import robustloss.losses.gce  # noqa: F401
import robustloss.losses.label_smoothing  # noqa: F401
import robustloss.losses.lgm  # noqa: F401
from robustloss.checkpoint import safe_load
from robustloss.data.spec import Dataset
from robustloss.errors import ConfigError
from robustloss.losses import LOSSES, create_loss
from robustloss.models import create_model
from robustloss.models.saved import HeadSpec, ModelSpec, load_model
from robustloss.train import Phase, TrainConfig, train

LENET = {"num_classes": 10, "in_channels": 1, "input_size": 28}
QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


def log_softmax(values):
    lse = math.log(sum(math.exp(v) for v in values))
    return [v - lse for v in values]


def entropy(probs):
    return -sum(p * math.log(p) for p in probs)


# ---------------------------------------------------------------- registry and attack objectives


def test_all_registered_with_their_attack_objective():
    expected = {"gce": "ce", "center": "ce", "label_smoothing": "ce", "lgm": "cw", "arcface": "cw"}
    for name, objective in expected.items():
        loss = create_loss(name)
        assert name in LOSSES and loss.name == name and loss.attack_objective == objective


def test_hyperparameters_are_the_papers_defaults():
    assert create_loss("gce").hyperparameters() == {"alpha": pytest.approx(1 / 3)}
    assert create_loss("center").hyperparameters() == {"lam": 0.003}
    assert create_loss("lgm").hyperparameters() == {"alpha": 1.0, "lam": 0.1}
    assert create_loss("arcface").hyperparameters() == {"s": 64.0, "m": 0.5}
    assert create_loss("label_smoothing").hyperparameters() == {"eps": 0.1}


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("gce", {"alpha": 0}, "gce.alpha"),
        ("gce", {"alpha": float("nan")}, "gce.alpha"),
        ("center", {"lam": -0.1}, "center.lam"),
        ("lgm", {"alpha": -1}, "lgm.alpha"),
        ("lgm", {"lam": float("inf")}, "lgm.lam"),
        ("arcface", {"s": 0}, "arcface.s"),
        ("arcface", {"m": -0.1}, "arcface.m"),
        ("arcface", {"m": math.pi}, "arcface.m"),
        ("label_smoothing", {"eps": 1.0}, "label_smoothing.eps"),
        ("label_smoothing", {"eps": -0.1}, "label_smoothing.eps"),
        ("lgm", {"margin": 1.0}, "valid parameters: alpha, lam"),  # unknown name, from the registry
    ],
)
def test_invalid_hyperparameters_raise_config_error(name, params, message):
    with pytest.raises(ConfigError, match=message):
        create_loss(name, **params)


def test_gce_needs_three_classes():
    with pytest.raises(ConfigError, match="at least 3 classes"):
        create_loss("gce")(torch.zeros(2, 2), torch.tensor([0, 1]))


# ---------------------------------------------------------------- GCE


def test_gce_matches_hand_computation():
    # logits (2, 1, 0), true class 0, K = 3:
    #   p_g = softmax(2, 1, 0)[0] = e^2 / (e^2 + e + 1) = 0.6652
    #   complement q = softmax over the false logits (1, 0) = (0.7311, 0.2689), H(q) = 0.5822
    #   GCE = -p_g^(1/3) * H(q) / log(K - 1) = -0.8729 * 0.5822 / 0.6931 = -0.7332
    p_g = math.exp(log_softmax([2.0, 1.0, 0.0])[0])
    q = [math.exp(v) for v in log_softmax([1.0, 0.0])]
    expected = -(p_g ** (1 / 3)) * entropy(q) / math.log(2)
    assert expected == pytest.approx(-0.7332, abs=1e-4)
    loss = create_loss("gce")(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gce_alpha_changes_only_the_guide_factor():
    # logits (0, 1, 2, 3), true class 2: same complement entropy, guide p_g^alpha with alpha = 1.
    logits = [0.0, 1.0, 2.0, 3.0]
    p_g = math.exp(log_softmax(logits)[2])
    q = [math.exp(v) for v in log_softmax([0.0, 1.0, 3.0])]
    expected = -p_g * entropy(q) / math.log(3)
    loss = create_loss("gce", alpha=1.0)(torch.tensor([logits]), torch.tensor([2]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gce_lies_in_minus_one_to_zero_and_survives_saturation():
    # Confident (p_g -> 1) and perfectly flat over the false classes: H(q) = log(K - 1) -> -1.
    confident_flat = create_loss("gce")(torch.tensor([[200.0, 0.0, 0.0, 0.0]]), torch.tensor([0]))
    assert confident_flat.item() == pytest.approx(-1.0, abs=1e-6)
    # Wrong and peaked: p_g ~ 0 -> ~0.
    wrong = create_loss("gce")(torch.tensor([[-50.0, 10.0, 0.0, 0.0]]), torch.tensor([0]))
    assert -1e-3 < wrong.item() <= 0.0

    logits = (torch.randn(64, 10) * 30).requires_grad_()
    logits.data[:, 0] = 500.0  # p_g == 1 exactly in float32: 1 - p_g would be 0
    values = create_loss("gce").per_sample(logits, torch.zeros(64, dtype=torch.long))
    values.sum().backward()
    assert torch.isfinite(values).all() and torch.isfinite(logits.grad).all()
    assert ((values >= -1.0 - 1e-6) & (values <= 0.0)).all()


# ---------------------------------------------------------------- label smoothing


def test_label_smoothing_matches_hand_computation():
    # logits (2, 1, 0), true class 0, eps = 0.1, K = 3: target q' = (0.9 + 0.1/3, 0.1/3, 0.1/3)
    #   loss = -sum_k q'_k log p_k = 0.9 * 0.4076 + 0.1 * mean(0.4076, 1.4076, 2.4076) = 0.5076
    log_p = log_softmax([2.0, 1.0, 0.0])
    target = [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]
    expected = -sum(t * lp for t, lp in zip(target, log_p))
    assert expected == pytest.approx(0.5076, abs=1e-4)
    loss = create_loss("label_smoothing")(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_label_smoothing_limits_and_torch_agreement():
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 7) * 3, torch.randint(0, 7, (16,))
    plain = create_loss("label_smoothing", eps=0.0)(logits, labels)
    assert torch.allclose(plain, F.cross_entropy(logits, labels), atol=1e-6)
    smoothed = create_loss("label_smoothing", eps=0.2)(logits, labels)
    assert torch.allclose(smoothed, F.cross_entropy(logits, labels, label_smoothing=0.2), atol=1e-6)


# ---------------------------------------------------------------- center loss


class _Shapes(torch.nn.Module):
    """Stands in for a model in bind(): only num_classes, feature_dim and a parameter."""

    def __init__(self, num_classes=3, feature_dim=2, dtype=torch.float32):
        super().__init__()
        self.num_classes, self.feature_dim = num_classes, feature_dim
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=dtype))


def bound_center_loss(lam=0.5, num_classes=3, feature_dim=2, dtype=torch.float32):
    loss = create_loss("center", lam=lam)
    loss.bind(_Shapes(num_classes, feature_dim, dtype))
    return loss


def test_center_loss_matches_hand_computation():
    # logits (2, 1, 0), true class 0, z = (1, 2), c_0 = (0.5, 0), lam = 0.5:
    #   CE = -log softmax(2, 1, 0)[0] = 0.4076;  1/2 ||z - c_0||^2 = 1/2 (0.25 + 4) = 2.125
    #   loss = 0.4076 + 0.5 * 2.125 = 1.4701
    loss = bound_center_loss(lam=0.5)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.5, 0.0], [9.0, 9.0], [-9.0, 9.0]]))
    expected = -log_softmax([2.0, 1.0, 0.0])[0] + 0.5 * 2.125
    value = loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]), torch.tensor([[1.0, 2.0]]))
    assert value.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(1.4701, abs=1e-4)


def test_center_loss_with_zero_weight_is_cross_entropy():
    loss = bound_center_loss(lam=0.0)
    logits, labels, z = torch.randn(8, 3), torch.randint(0, 3, (8,)), torch.randn(8, 2)
    assert torch.allclose(loss(logits, labels, z), F.cross_entropy(logits, labels))


def test_center_loss_needs_features_and_bind():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="penultimate features"):
        bound_center_loss()(logits, labels)
    with pytest.raises(RuntimeError, match="bind"):
        create_loss("center")(logits, labels, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"features of shape \(N, 2\)"):
        bound_center_loss()(logits, labels, torch.randn(4, 5))


def test_center_loss_centers_are_its_parameters_and_bind_keeps_them():
    loss = create_loss("center")
    assert list(loss.parameters()) == [] and "centers" not in loss.state_dict()  # nothing before bind
    model = create_model("lenet5")
    loss.bind(model)
    (centers,) = list(loss.parameters())
    assert centers.shape == (10, 84) and centers.requires_grad
    bound = math.sqrt(3 / 84)  # Caffe xavier (FAN_IN) filler
    assert centers.abs().max() <= bound
    loss.bind(model)  # a second bind with the same shapes keeps the trained centers
    assert loss.centers is centers
    with pytest.raises(ConfigError, match="num_classes x feature_dim"):
        loss.bind(_Shapes(num_classes=3, feature_dim=2))


def test_center_loss_centers_move_towards_class_means_when_trained():
    torch.manual_seed(0)
    loss = bound_center_loss(lam=1.0)
    z = torch.tensor([[4.0, 0.0], [6.0, 0.0], [0.0, -5.0]])  # class 0 mean (5, 0), class 2 at (0, -5)
    labels = torch.tensor([0, 0, 2])
    logits = torch.zeros(3, 3)
    start = loss.centers.detach().clone()
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        loss(logits, labels, z).backward()
        optimizer.step()
    assert not torch.equal(start, loss.centers.detach())
    assert torch.allclose(loss.centers[0].detach(), torch.tensor([5.0, 0.0]), atol=1e-3)
    assert torch.allclose(loss.centers[2].detach(), torch.tensor([0.0, -5.0]), atol=1e-3)
    assert torch.equal(loss.centers[1].detach(), start[1])  # no sample of class 1: untouched


def test_center_loss_state_dict_round_trips_after_bind():
    model = create_model("lenet5")
    trained = create_loss("center", lam=0.01)
    trained.bind(model)
    with torch.no_grad():
        trained.centers.add_(1.0)
    fresh = create_loss("center", lam=0.01)  # what the trainer does on resume
    fresh.bind(model)
    assert not torch.equal(fresh.centers, trained.centers)
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.centers, trained.centers)


# ---------------------------------------------------------------- L-GM


def lgm_head_with_means(means):
    head = create_loss("lgm").make_head(means.shape[1], means.shape[0])
    with torch.no_grad():
        head.means.copy_(means)
    return head


def test_lgm_head_gives_minus_half_squared_distances():
    head = lgm_head_with_means(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 2.0]]))
    logits = head(torch.tensor([[1.0, 0.0]]))
    # d = (1, 4, 5) -> h = (-0.5, -2, -2.5)
    assert torch.allclose(logits, torch.tensor([[-0.5, -2.0, -2.5]]))


def test_lgm_matches_hand_computation():
    # z = (1, 0), mu_0 = (0, 0), mu_1 = (3, 0), true class 0, alpha = 1, lam = 0.1:
    #   d = (1, 4); training logits -1/2 d_k (1 + alpha 1[k=0]) = (-1, -2)
    #   CE = log(1 + e^(-2 + 1)) = log(1 + e^-1) = 0.3133;  lam * d_0 / 2 = 0.05  -> 0.3633
    head = lgm_head_with_means(torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
    logits = head(torch.tensor([[1.0, 0.0]]))
    expected = math.log(1 + math.exp(-1)) + 0.1 * 0.5
    assert expected == pytest.approx(0.3633, abs=1e-4)
    assert create_loss("lgm")(logits, torch.tensor([0])).item() == pytest.approx(expected, abs=1e-6)


def test_lgm_without_margin_and_regulariser_is_cross_entropy_on_the_head():
    torch.manual_seed(0)
    head = create_loss("lgm").make_head(5, 4)
    logits, labels = head(torch.randn(12, 5)), torch.randint(0, 4, (12,))
    plain = create_loss("lgm", alpha=0.0, lam=0.0)(logits, labels)
    assert torch.allclose(plain, F.cross_entropy(logits, labels))
    # The margin makes the true class harder: the loss only grows with alpha.
    assert create_loss("lgm", alpha=1.0, lam=0.0)(logits, labels) > plain


# ---------------------------------------------------------------- ArcFace


def test_arcface_head_is_scaled_cosine():
    head = create_loss("arcface", s=10.0).make_head(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5], [-1.0, -1.0]]))
    logits = head(torch.tensor([[3.0, 4.0]]))  # z/|z| = (0.6, 0.8)
    assert torch.allclose(logits, 10.0 * torch.tensor([[0.6, 0.8, -1.4 / math.sqrt(2)]]), atol=1e-6)


def test_arcface_matches_hand_computation():
    # s = 2, m = 0.5, cos(theta) = (0.6, 0.8), true class 0:
    #   theta_0 = acos(0.6) = 0.9273, cos(theta_0 + 0.5) = cos(1.4273) = 0.1430
    #   loss = -log e^(2*0.1430) / (e^(2*0.1430) + e^(2*0.8)) = log(1.3311 + 4.9530) - 0.2860 = 1.5520
    cos_m = math.cos(math.acos(0.6) + 0.5)
    expected = -(2 * cos_m - math.log(math.exp(2 * cos_m) + math.exp(1.6)))
    assert expected == pytest.approx(1.5520, abs=1e-4)
    loss = create_loss("arcface", s=2.0, m=0.5)(torch.tensor([[1.2, 1.6]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_arcface_uses_the_reference_fallback_past_pi_minus_m():
    # cos(theta_0) = -0.95 <= cos(pi - 0.5) = -0.8776, so theta_0 + m > pi: the reference code
    # uses cos(theta) - m sin(m) = -0.95 - 0.5 * 0.4794 = -1.1897 instead of cos(theta + m)
    # = cos(2.8240 + 0.5) = -0.9834 (past pi, where cos(theta + m) starts increasing again):
    #   loss = log(e^(2*-1.1897) + e^(2*0.3)) + 2.3794 = 3.0290   (2.6408 without the fallback)
    shifted = -0.95 - 0.5 * math.sin(0.5)
    expected = -(2 * shifted - math.log(math.exp(2 * shifted) + math.exp(2 * 0.3)))
    assert expected == pytest.approx(3.0290, abs=1e-4)
    loss = create_loss("arcface", s=2.0, m=0.5)(torch.tensor([[-1.9, 0.6]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # The fallback keeps the target logit decreasing in theta: a more wrong sample costs more.
    worse = create_loss("arcface", s=2.0, m=0.5)(torch.tensor([[-1.98, 0.6]]), torch.tensor([0]))
    assert worse.item() > loss.item()


def test_arcface_without_margin_is_cross_entropy_on_the_head():
    torch.manual_seed(0)
    head = create_loss("arcface").make_head(6, 5)
    logits, labels = head(torch.randn(20, 6)), torch.randint(0, 5, (20,))
    plain = create_loss("arcface", m=0.0)(logits, labels)
    assert torch.allclose(plain, F.cross_entropy(logits, labels), atol=1e-4)
    assert create_loss("arcface")(logits, labels) > plain


def test_arcface_is_finite_at_cosine_plus_minus_one():
    logits = torch.tensor([[64.0, -64.0, 0.0], [-64.0, 64.0, 0.0]], requires_grad=True)
    value = create_loss("arcface")(logits, torch.tensor([0, 0]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- gradients (double precision)


def test_gradcheck_gce_and_label_smoothing():
    torch.manual_seed(0)
    logits = (torch.randn(5, 6, dtype=torch.double) * 2).requires_grad_()
    labels = torch.randint(0, 6, (5,))
    for name in ("gce", "label_smoothing"):
        loss = create_loss(name)
        assert gradcheck(lambda a: loss.per_sample(a, labels), (logits,))


def test_gradcheck_center_loss_wrt_logits_features_and_centers():
    torch.manual_seed(0)
    loss = bound_center_loss(lam=0.7, num_classes=4, feature_dim=3, dtype=torch.double)
    logits = torch.randn(6, 4, dtype=torch.double, requires_grad=True)
    z = torch.randn(6, 3, dtype=torch.double, requires_grad=True)
    centers = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])

    def value(a, feats, c):
        return functional_call(loss, {"centers": c}, (a, labels, feats))

    assert gradcheck(value, (logits, z, centers))


def test_gradcheck_lgm_head_plus_loss_wrt_features_and_means():
    torch.manual_seed(0)
    loss = create_loss("lgm")
    head = loss.make_head(3, 4).double()
    z = torch.randn(6, 3, dtype=torch.double, requires_grad=True)
    means = head.means.detach().clone().requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    assert gradcheck(lambda feats, mu: loss.per_sample(functional_call(head, {"means": mu}, (feats,)), labels),
                     (z, means))


def test_gradcheck_arcface_head_plus_loss_wrt_features_and_weights():
    torch.manual_seed(0)
    loss = create_loss("arcface", s=8.0)
    head = loss.make_head(4, 3).double()
    z = torch.randn(5, 4, dtype=torch.double, requires_grad=True)
    weight = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1])

    def cos_true(feats, w):
        return (F.normalize(feats, dim=1) @ F.normalize(w, dim=1).t()).gather(1, labels[:, None])

    # Away from the kinks: the acos clamp at +-1 and the fallback switch at cos(pi - m).
    c = cos_true(z, weight)
    assert ((c.abs() < 0.99) & ((c - math.cos(math.pi - 0.5)).abs() > 0.05)).all()
    assert gradcheck(lambda feats, w: loss.per_sample(functional_call(head, {"weight": w}, (feats,)), labels),
                     (z, weight))


def test_gradcheck_arcface_fallback_branch_wrt_logits():
    loss = create_loss("arcface", s=4.0)
    # true-class cosines -0.95 and -0.97 (fallback branch), 0.3 (margin branch)
    logits = torch.tensor([[-3.8, 1.0, 0.5], [0.2, -3.88, 1.5], [1.2, 0.4, -0.4]],
                          dtype=torch.double, requires_grad=True)
    labels = torch.tensor([0, 1, 0])
    assert gradcheck(lambda a: loss.per_sample(a, labels), (logits,))


# ---------------------------------------------------------------- heads in saved models


@pytest.mark.parametrize("name, params, head_type", [
    ("lgm", {"alpha": 0.5, "lam": 0.05}, "GaussianMeansHead"),
    ("arcface", {"s": 30.0, "m": 0.3}, "CosineHead"),
])
def test_head_round_trips_through_model_spec(name, params, head_type):
    spec = ModelSpec(name="lenet5", params=dict(LENET), head=HeadSpec(name, params))
    torch.manual_seed(0)
    original = spec.build().eval()
    assert type(original.head).__name__ == head_type
    x = torch.rand(4, 1, 28, 28)
    logits = original(x)
    assert logits.shape == (4, 10)

    torch.manual_seed(1)  # a different random init, so equality below comes from the state dict
    rebuilt = spec.build().eval()
    assert not torch.allclose(rebuilt(x), logits)
    rebuilt.load_state_dict(original.state_dict())
    assert torch.equal(rebuilt(x), logits)


@pytest.mark.parametrize("name", ["gce", "center", "label_smoothing"])
def test_linear_head_losses_keep_the_linear_head(name):
    assert create_loss(name).make_head(84, 10) is None


# ---------------------------------------------------------------- through the trainer


@pytest.fixture(scope="module")
def small(mnist5k):
    """600 training digits: 3 steps per epoch at batch 256."""
    return Dataset(mnist5k.spec, mnist5k.train.subset(slice(0, 600)), mnist5k.test.subset(slice(0, 200)))


def test_trainer_optimises_and_resumes_center_loss_centers(small, tmp_path):
    config = TrainConfig(recipe=[Phase("center", 2, {"lam": 0.1})], seed=3)
    straight = train(config, tmp_path / "straight", data=small, **QUIET)
    centers = safe_load(tmp_path / "straight" / "checkpoints" / "last.pt")["loss_state"]["centers"]
    assert centers.shape == (10, 84)

    def die_in_epoch_2(message):
        if "epoch 2/2" in message:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", data=small, progress=False, device="cpu", log=die_in_epoch_2)
    after_one = safe_load(tmp_path / "killed" / "checkpoints" / "last.pt")["loss_state"]["centers"]
    resumed = train(config, tmp_path / "killed", data=small, resume=True, **QUIET)
    resumed_centers = safe_load(tmp_path / "killed" / "checkpoints" / "last.pt")["loss_state"]["centers"]
    assert not torch.equal(after_one, resumed_centers)  # the optimiser moved them in epoch 2
    assert torch.equal(centers, resumed_centers)  # and exactly as in the uninterrupted run
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key])


@pytest.mark.parametrize("name", ["lgm", "arcface"])
def test_trained_head_is_saved_and_reloaded(small, tmp_path, name):
    result = train(TrainConfig(recipe=[Phase(name, 1)], seed=0), tmp_path / "run", data=small, **QUIET)
    model, spec, _ = load_model(tmp_path / "run" / "model.pt")
    assert spec.head == HeadSpec(name, {})
    x = small.test.batch(slice(0, 32))[0]
    assert torch.equal(model(x), result.model.eval()(x))
