"""MMC, MMLDA, EMC and I-SCE: hand-computed values, limits, heads and adaptive objectives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustloss.attacks.objectives import get_objective, resolve_objective
from robustloss.errors import ConfigError
from robustloss.losses import create_loss
from robustloss.losses.center_heads import CenterDistanceHead
from robustloss.models import Classifier

TWO_CENTERS = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])


def head(scale=1.0, trainable=False):
    return CenterDistanceHead(2, TWO_CENTERS, scale=scale, trainable=trainable)


def test_center_head_logits_are_negative_squared_distances():
    z = torch.tensor([[0.5, 0.5]])
    # ||z - (1,0)||^2 = 0.25 + 0.25 = 0.5 ; ||z - (-1,0)||^2 = 2.25 + 0.25 = 2.5
    assert torch.allclose(head()(z), torch.tensor([[-0.5, -2.5]]))
    assert torch.allclose(head(scale=0.5)(z), torch.tensor([[-0.25, -1.25]]))


def test_mmc_value_is_half_squared_distance_to_own_center():
    logits = head()(torch.tensor([[0.5, 0.5], [0.0, 2.0]]))
    # sample 1, class 0: 1/2 * 0.5 ; sample 2, class 1: 1/2 * (1 + 4)
    loss = create_loss("mmc", embed_dim=None)
    assert loss.per_sample(logits, torch.tensor([0, 1])).tolist() == pytest.approx([0.25, 2.5])


def test_mmlda_is_softmax_ce_over_half_distances():
    logits = head(scale=0.5)(torch.tensor([[0.5, 0.5]]))
    # -log( e^-0.25 / (e^-0.25 + e^-1.25) ) = log(1 + e^-1)
    assert create_loss("mmlda", embed_dim=None)(logits, torch.tensor([0])).item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_emc_adds_the_prior_on_center_drift():
    h = head(trainable=True)
    with torch.no_grad():
        h.centers[0] += torch.tensor([0.0, 1.0])  # class 0 center drifted by distance 1
    model = Classifier(torch.nn.Identity(), 2, 2)
    model.replace_head(h)
    loss = create_loss("emc", alpha=2.0, embed_dim=None)
    loss.bind(model)
    z = torch.tensor([[0.5, 0.5]])  # ||z - (1, 1)||^2 = 0.5
    assert loss(model(z), torch.tensor([0])).item() == pytest.approx(0.5 * 0.5 + 1.0 / (2 * 2.0))
    assert len(list(loss.parameters())) == 0  # the centers belong to the model's head, not to the loss


def test_mmc_head_uses_mm_centers_and_256d_embedding_by_default():
    h = create_loss("mmc").make_head(84, 10)
    assert h.embed.in_features == 84 and h.embed.out_features == 256
    norms = h.centers.norm(dim=1)
    assert torch.allclose(norms, torch.full((10,), 10.0), atol=1e-4)
    gram = h.centers @ h.centers.T
    off = gram[~torch.eye(10, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -100.0 / 9), atol=1e-3)
    assert "centers" not in dict(h.named_parameters())  # fixed centers: buffers, saved with the model


def test_hierarchical_centers_option():
    groups = [[0, 1], [2, 3]]
    h = create_loss("mmc", groups=groups, embed_dim=8, norm=10, sub_norm=1).make_head(8, 4)
    within = (h.centers[0] - h.centers[1]).norm()
    between = (h.centers[0] - h.centers[2]).norm()
    assert within < between
    with pytest.raises(ConfigError, match="exactly once"):
        create_loss("mmc", groups=[[0, 1], [1, 2]], embed_dim=8).make_head(8, 4)
    with pytest.raises(ConfigError, match="unknown hierarchy"):
        create_loss("mmc", groups="imagenet")


def test_isce_training_value_and_inference_transform():
    h_logits = torch.tensor([[3.0, 4.0]])  # normalised: (0.6, 0.8)
    loss = create_loss("isce", s=1.5, m=0.1)
    normalised = F.normalize(h_logits, dim=1)
    # true class 0: logit 1.5 * 0.6 + 0.1 = 1.0 against 0.8 -> -log(e^1 / (e^1 + e^0.8))
    assert loss(normalised, torch.tensor([0])).item() == pytest.approx(math.log(1 + math.exp(-0.2)), abs=1e-6)
    head_module = loss.make_head(2, 2)
    with torch.no_grad():
        head_module.linear.weight.copy_(torch.eye(2))
        head_module.linear.bias.zero_()
    head_module.train()
    assert torch.allclose(head_module(h_logits), normalised)
    head_module.eval()  # inference: the arg-max class (1) gets s * f + m = 1.5 * 0.8 + 0.1 = 1.3
    assert torch.allclose(head_module(h_logits), torch.tensor([[0.6, 1.3]]))


def test_isce_limit_is_cross_entropy():
    logits = torch.randn(6, 5)
    labels = torch.randint(0, 5, (6,))
    plain = create_loss("isce", s=1.0, m=0.0, normalize=False)
    assert torch.allclose(plain(logits, labels), F.cross_entropy(logits, labels))
    with pytest.raises(ConfigError, match="s must be >= 1"):
        create_loss("isce", s=0.5)


def _trained_isce_digits_model(s: float):
    """A small MLP trained with I-SCE (s, m = 0.1) on scikit-learn's digits: trained-like logits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    loss = create_loss("isce", s=s, m=0.1)
    body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())
    head = loss.make_head(32, 10)
    optimizer = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=0.01)
    for _ in range(20):
        for i in range(0, 1500, 100):
            optimizer.zero_grad()
            loss(head(body(x[i:i + 100])), y[i:i + 100]).backward()
            optimizer.step()
    return body, head.eval(), x[1500:], y[1500:]


@pytest.mark.parametrize("s", [1.0, 1.5, 2.0, 4.0])
def test_isce_inference_on_a_trained_model_keeps_the_decision_and_gives_eq2(s):
    body, head, x, y = _trained_isce_digits_model(s)
    # test digits, and inputs far from the training data (noise, negated digits)
    inputs = torch.cat([x, torch.rand(300, 64), -x])
    with torch.no_grad():
        f = head.normalized_logits(body(inputs))
        g = head(body(inputs))
    assert (f[: len(y)].argmax(1) == y).float().mean() > 0.85  # it is trained
    top = f.argmax(1)
    assert torch.equal(g.argmax(1), top)
    # Eq. (2) by hand for the predicted class i: e^{s f_i + m} / (e^{s f_i + m} + sum_{j != i} e^{f_j})
    f_top = f.gather(1, top[:, None]).squeeze(1)
    others = f.exp().sum(1) - f_top.exp()
    eq2 = torch.exp(s * f_top + 0.1) / (torch.exp(s * f_top + 0.1) + others)
    premise = s * f_top + 0.1 >= f_top  # the transform raises the top logit (Sec. 3.2's argument)
    assert premise.all()  # on a trained model's normalised logits the paper's premise holds
    assert torch.allclose(g.softmax(1).gather(1, top[:, None]).squeeze(1), eq2, atol=1e-6)


@pytest.mark.parametrize("s", [1.5, 2.0, 4.0])
def test_isce_inference_keeps_the_decision_where_the_transform_would_lower_the_top_logit(s):
    # Every normalised logit negative: the top one (-0.30) is below -m / (s - 1) for these s, so
    # s * f + m lies below the runner-up (-0.31) and the unclipped transform would flip the decision.
    f = F.normalize(torch.tensor([[-0.30, -0.31, -0.32, -0.33, -0.34, -0.35, -0.36, -0.37, -0.38, -0.39]]), dim=1)
    assert (s * f[0, 0] + 0.1) < f[0, 1]
    head_module = create_loss("isce", s=s, m=0.1).make_head(10, 10)
    with torch.no_grad():
        head_module.linear.weight.copy_(torch.eye(10))
        head_module.linear.bias.zero_()
    head_module.eval()
    g = head_module(f)
    assert g.argmax(1).item() == 0
    assert torch.allclose(g, f)  # the margin is clipped at zero: plain softmax of f there


def test_mmc_adaptive_objective():
    logits = head()(torch.tensor([[0.5, 0.5]]))  # -(0.5, 2.5)
    mmc = get_objective("mmc")
    assert mmc(logits, torch.tensor([0]), False).item() == pytest.approx(0.5)  # push away from own center
    assert mmc(logits, torch.tensor([1]), True).item() == pytest.approx(-2.5)  # pull towards the target


@pytest.mark.parametrize("loss, expected", [("mmc", "mmc"), ("emc", "mmc"), ("mmlda", "ce"), ("pc", "ce"),
                                            ("isce", "ce"), (None, "cw")])
def test_adaptive_resolves_from_the_training_loss(loss, expected):
    model = Classifier(torch.nn.Identity(), 2, 2)
    model.trained_with = loss
    assert resolve_objective("adaptive", model) == expected
    assert resolve_objective("ce", model) == "ce"
