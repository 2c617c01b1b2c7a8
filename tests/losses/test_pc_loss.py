"""PC loss + logit constraints checked against hand computations and against Eq. (7)."""

from __future__ import annotations

import math

import pytest
import torch

from robustloss.errors import ConfigError, UnknownNameError
from robustloss.losses import LOSSES, create_loss


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_paper_form_matches_hand_computation():
    # logits (2, 1, 0), true class 0: f = softmax = (0.6652, 0.2447, 0.0900)
    f = softmax([2.0, 1.0, 0.0])
    pc = max(0, f[1] + 0.995 - f[0]) + max(0, f[2] + 0.995 - f[0])
    constraint = max(0, 2.0 - 1.0)  # runner-up class is 1
    expected = pc + 0.05 * constraint
    loss = create_loss("pc")(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(1.0443, abs=1e-4)


def test_batch_mean_and_inactive_hinges():
    # Sample 1 is confidently right: f_y - f_k > xi for all k -> PC term 0, only the constraint acts.
    # Sample 2 is wrong (class 1 wins): the logit gap a_y - a_j is negative -> constraint 0.
    logits = torch.tensor([[12.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 0])
    f2 = softmax([0.0, 3.0, 1.0])
    sample1 = 0.05 * 12.0
    sample2 = (f2[1] + 0.5 - f2[0]) + (f2[2] + 0.5 - f2[0])
    loss = create_loss("pc", xi=0.5)(logits, labels)
    assert loss.item() == pytest.approx((sample1 + sample2) / 2, abs=1e-6)


def test_released_variant_matches_hand_computation():
    logits = [2.0, 1.0, 0.0]
    f = softmax(logits)
    pc = (max(0, f[1] + 0.995 - f[0]) + max(0, f[2] + 0.995 - f[0])) / 2  # divided by K - 1
    w = softmax([1.0, 0.0])  # softmax over the false logits only
    constraint = w[0] * (2.0 - 1.0) + w[1] * (2.0 - 0.0)
    loss = create_loss("pc", variant="released")(torch.tensor([logits]), torch.tensor([0]))
    assert loss.item() == pytest.approx(pc + 0.05 * constraint, abs=1e-6)


def test_released_variant_weights_are_not_detached():
    logits = torch.tensor([[2.0, 1.0, 0.0]], requires_grad=True)
    # Isolate the constraint: xi tiny makes every PC hinge inactive.
    create_loss("pc", variant="released", xi=1e-6, lam=1.0)(logits, torch.tensor([0])).backward()
    w = torch.tensor([1.0, 0.0]).softmax(0)
    gaps = torch.tensor([1.0, 2.0])
    # d/da_1 of sum_k w_k * gap_k with w depending on a_1 and gap_1 = a_0 - a_1:
    dw1 = w[0] * (1 - w[0]) * gaps[0] - w[0] * w[1] * gaps[1]  # through the softmax weights
    expected = dw1 - w[0]  # plus the direct term
    assert logits.grad[0, 1].item() == pytest.approx(expected.item(), abs=1e-6)


def test_gradient_wrt_true_logit_matches_eq7():
    # With every hinge active and lam = 0, dL/da_y = sum_{y'!=y} -f_y (1 - f_y + f_y') (Eq. 7).
    logits = torch.tensor([[0.3, 0.1, -0.2, 0.05]], dtype=torch.float64, requires_grad=True)
    y = 0
    create_loss("pc", lam=0.0)(logits, torch.tensor([y])).backward()
    f = logits.detach().softmax(1)[0]
    expected = sum(-f[y] * (1 - f[y] + f[k]) for k in range(4) if k != y)
    assert logits.grad[0, y].item() == pytest.approx(expected.item(), rel=1e-9)


def test_gradcheck_double_precision():
    torch.manual_seed(0)
    logits = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (5,))
    for variant in ("paper", "released"):
        loss = create_loss("pc", variant=variant)
        assert torch.autograd.gradcheck(lambda z: loss(z, labels), (logits,))


def test_registry_and_validation():
    assert {"ce", "pc"} <= set(LOSSES.names())
    with pytest.raises(UnknownNameError, match="valid loss names: .*pc"):
        create_loss("pcc")
    with pytest.raises(ConfigError, match="valid parameters: xi, lam, variant"):
        create_loss("pc", margin=0.5)
    with pytest.raises(ConfigError, match="xi"):
        create_loss("pc", xi=1.5)
    with pytest.raises(ConfigError, match="variant"):
        create_loss("pc", variant="other")


def test_cross_entropy_matches_hand_computation():
    f = softmax([2.0, 1.0, 0.0])
    loss = create_loss("ce")(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(f[1]), abs=1e-6)
