"""The randomization defence of Xie et al. 2018 (random resize + pad) as a model wrapper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustloss.attacks import ATTACKS, create_attack
from robustloss.defenses import DEFENSES, RandomResizePad, apply_defense
from robustloss.errors import ConfigError, UnknownNameError
from robustloss.evaluate.records import Evaluation
from robustloss.evaluate.stochastic import is_stochastic, prediction_spread, record_stochasticity

N = 100


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, N))


class Identity(nn.Module):
    def forward(self, x):
        return x


def test_two_passes_differ_but_the_expected_prediction_is_stable(trained_lenet, batch):
    x, y = batch
    defended = apply_defense(trained_lenet, "random-resize-pad")
    assert is_stochastic(defended, x) and not is_stochastic(trained_lenet, x)
    torch.manual_seed(0)
    first, spread = prediction_spread(defended, x, y, draws=50)
    second, _ = prediction_spread(defended, x, y, draws=50)
    assert spread > 0 and abs(first - second) < 0.02  # measured: spread ~0.03 per draw, means ~0.005 apart
    averaged = apply_defense(trained_lenet, "random-resize-pad", draws=20)  # the wrapper's own averaging
    with torch.no_grad():
        agree = (averaged(x[:50]).argmax(1) == averaged(x[:50]).argmax(1)).float().mean()
    assert agree >= 0.94


def test_probing_does_not_consume_the_global_random_stream(trained_lenet, batch):
    defended = apply_defense(trained_lenet, "random-resize-pad")
    torch.manual_seed(3)
    is_stochastic(defended, batch[0])
    after_probe = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after_probe, torch.rand(1))


def test_a_single_size_without_padding_is_the_plain_model(trained_lenet, batch):
    x = batch[0]
    same = apply_defense(trained_lenet, "random-resize-pad", min_size=28, max_size=28)
    with torch.no_grad():
        assert torch.allclose(same(x), trained_lenet(x), atol=1e-5)


def test_every_padding_position_occurs_and_the_content_is_kept():
    # 2x2 ones into a 4x4 canvas with no final resize (pad_to = input size): 9 possible corners.
    wrapper = RandomResizePad(Identity(), min_size=2, max_size=2, pad_to=4)
    torch.manual_seed(0)
    out = wrapper(torch.ones(400, 1, 4, 4))
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.full((400,), 4.0))
    corners = {tuple(map(int, (img[0] > 0).nonzero()[0])) for img in out}
    assert corners == {(r, c) for r in range(3) for c in range(3)}


def test_defaults_follow_xies_ratio_and_gradients_flow(trained_lenet, batch):
    defended = apply_defense(trained_lenet, "random-resize-pad")
    assert defended.sizes(28) == (28, 31, 31) and defended.sizes(32) == (32, 35, 35)
    x = batch[0][:8].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(defended(x).logsumexp(1).sum(), x)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().amax(1) > 0).all()


def test_model_metadata_is_forwarded_but_the_undefended_parts_are_not(trained_lenet):
    trained_lenet.trained_with = "ce"
    defended = apply_defense(trained_lenet, "random-resize-pad")
    assert (defended.num_classes, defended.feature_dim, defended.trained_with) == (10, trained_lenet.feature_dim, "ce")
    with pytest.raises(AttributeError):
        defended.features  # would bypass the randomization  # noqa: B018
    plain = apply_defense(Identity(), "random-resize-pad")
    assert not hasattr(plain, "num_classes")


def test_averaged_draws_return_log_probabilities(trained_lenet, batch):
    averaged = apply_defense(trained_lenet, "random-resize-pad", draws=4)
    with torch.no_grad():
        total = averaged(batch[0][:8]).exp().sum(dim=1)
    assert torch.allclose(total, torch.ones(8), atol=1e-4)


def test_settings_change_the_cache_fingerprint(trained_lenet):
    from robustloss.evaluate.chunk_cache import model_fingerprint

    prints = {model_fingerprint(apply_defense(trained_lenet, "random-resize-pad", **p))
              for p in ({}, {"draws": 5}, {"max_size": 34})}
    assert len(prints) == 3 and model_fingerprint(trained_lenet) not in prints


def test_unknown_names_and_parameters_list_the_valid_ones(tiny_model):
    with pytest.raises(UnknownNameError, match="random-resize-pad"):
        apply_defense(tiny_model, "jpeg")
    with pytest.raises(ConfigError, match="valid parameters: min_size, max_size, pad_to, draws"):
        apply_defense(tiny_model, "random-resize-pad", sizes=3)
    with pytest.raises(ConfigError, match="draws must be an integer >= 1"):
        apply_defense(tiny_model, "random-resize-pad", draws=0)
    with pytest.raises(ConfigError, match="min_size=40 > max_size=30"):
        apply_defense(tiny_model, "random-resize-pad", min_size=40, max_size=30)
    with pytest.raises(ValueError, match="pad_to=30 is smaller than max_size=31"):
        apply_defense(tiny_model, "random-resize-pad", pad_to=30)(torch.rand(1, 1, 28, 28))
    assert DEFENSES.names() == ["random-resize-pad"]


def test_record_stochasticity_stores_the_answer(trained_lenet, batch):
    x, y = batch
    evaluation = Evaluation(torch.arange(N).numpy(), y.numpy(), y.numpy())
    assert record_stochasticity(evaluation, apply_defense(trained_lenet, "random-resize-pad"), x[:32])
    assert evaluation.meta["stochastic"] is True
    assert record_stochasticity(evaluation, trained_lenet, x[:32]) is False
    assert prediction_spread(trained_lenet, x, y, draws=3)[1] == 0.0


# Every registered attack's call path (eval mode, budget check, final verdict) on the wrapped model.
QUICK = {
    "fgsm": {"eps": 0.2}, "fgsm-rs": {"eps": 0.2}, "bim": {"eps": 0.2, "steps": 3, "step_size": 0.1}, "pgd": {"eps": 0.2, "steps": 3, "step_size": 0.1},
    "mim": {"eps": 0.2, "steps": 3, "step_size": 0.1}, "pgd-l2": {"eps": 2.0, "steps": 3},
    "apgd": {"eps": 0.2, "n_iter": 3}, "apgd-ce": {"eps": 0.2, "n_iter": 3}, "apgd-dlr": {"eps": 0.2, "n_iter": 3},
    "cw": {"steps": 5, "binary_search_steps": 1}, "deepfool": {"max_iter": 3},
    "spsa": {"eps": 0.2, "steps": 2, "samples": 8, "lr": 0.1}, "simba": {"eps": 0.5, "max_queries": 20},
    "transfer": {"eps": 0.2, "method": "mim"}, "gaussian-noise": {"sigma": 0.3, "draws": 2},
    "rotation": {"max_degrees": 30, "draws": 2},
    "square": {"eps": 0.2, "n_queries": 10}, "apgd-t": {"eps": 0.2, "n_iter": 3, "n_target_classes": 2},
    "fab": {"n_iter": 3}, "fab-t": {"n_iter": 3, "n_target_classes": 2},
}


def test_every_attack_has_a_quick_setting_here():
    assert set(ATTACKS.names()) == set(QUICK), "add new attacks to QUICK"


@pytest.mark.parametrize("name", sorted(QUICK))
def test_every_attack_runs_on_the_defended_model(name, tiny_model, batch, cnn3_substitute):
    x, y = batch[0][:8], batch[1][:8]
    params = QUICK[name] | ({"substitute": str(cnn3_substitute)} if name == "transfer" else {})
    attack = create_attack(name, **params)
    defended = apply_defense(tiny_model, "random-resize-pad")
    torch.manual_seed(0)
    result = attack(defended, x, y, generator=torch.Generator().manual_seed(0))  # checks the budget itself
    assert result.x_adv.shape == x.shape and result.pred.shape == y.shape
    assert all(p.grad is None for p in tiny_model.parameters())
