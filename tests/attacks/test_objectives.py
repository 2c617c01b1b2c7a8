import pytest
import torch

from robustloss.attacks import get_objective


def test_cw_margin_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.0]])
    cw = get_objective("cw")
    assert cw(logits, torch.tensor([0]), False).item() == pytest.approx(2.0 - 3.0)
    # targeted towards class 1: gain = a_t - max_{j != t} a_j = 1 - 3
    assert cw(logits, torch.tensor([1]), True).item() == pytest.approx(1.0 - 3.0)


def test_ce_sign_flips_for_targeted():
    logits = torch.tensor([[3.0, 1.0, 2.0]])
    ce = get_objective("ce")
    assert ce(logits, torch.tensor([1]), True).item() == pytest.approx(-ce(logits, torch.tensor([1]), False).item())


def test_dlr_by_hand():
    logits = torch.tensor([[4.0, 1.0, 2.0, 0.0]])
    # untargeted, y = 0: -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3) = -(4 - 2) / (4 - 1)
    assert get_objective("dlr")(logits, torch.tensor([0]), False).item() == pytest.approx(-2.0 / 3.0)
    with pytest.raises(ValueError, match="at least 3 classes"):
        get_objective("dlr")(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), False)
