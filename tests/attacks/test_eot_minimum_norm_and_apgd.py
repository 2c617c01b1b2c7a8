"""Expectation over Transformation (``eot=``) on APGD, C&W-L2 and DeepFool."""

from __future__ import annotations

import pytest
import torch

from robustloss.attacks import ATTACKS, PRESETS, create_attack
from robustloss.defenses import apply_defense
from robustloss.evaluate.config import AttackSpec
from robustloss.evaluate.stochastic import prediction_spread

N = 16  # images for the deterministic checks
QUICK = {
    "apgd": ("apgd", {"eps": 0.1, "n_iter": 6}),
    "apgd-l2": ("apgd", {"eps": 1.5, "n_iter": 6, "norm": "l2", "objective": "cw"}),
    "apgd-ce": ("apgd-ce", {"eps": 0.1, "n_iter": 6, "restarts": 2}),
    "apgd-dlr": ("apgd-dlr", {"eps": 0.1, "n_iter": 6}),
    "cw": ("cw", {"binary_search_steps": 2, "steps": 10, "lr": 0.1, "initial_const": 1.0}),
    "deepfool": ("deepfool", {"max_iter": 6}),
    "deepfool-eps": ("deepfool", {"max_iter": 6, "eps": 1.0, "candidates": 4}),
}
EOT_ATTACKS = ("apgd", "apgd-ce", "apgd-dlr", "cw", "deepfool")


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, 100))


def _run(name, params, model, x, y):
    return create_attack(name, **params)(model, x, y, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def plain_results(trained_lenet, batch):
    """Each QUICK attack without ``eot`` on the deterministic trained LeNet (shared by the tests below)."""
    x, y = batch[0][:N], batch[1][:N]
    return {key: _run(name, params, trained_lenet, x, y) for key, (name, params) in QUICK.items()}


@pytest.mark.parametrize("key", sorted(QUICK))
def test_eot_1_is_the_plain_attack_bit_for_bit(key, trained_lenet, batch, plain_results):
    name, params = QUICK[key]
    x, y = batch[0][:N], batch[1][:N]
    explicit = _run(name, params | {"eot": 1}, trained_lenet, x, y)
    plain = plain_results[key]
    assert torch.equal(plain.x_adv, explicit.x_adv) and torch.equal(plain.queries, explicit.queries)
    hyper = create_attack(name, **params, eot=1).hyperparameters()
    assert "eot" not in hyper  # records and cache keys of plain attacks do not change
    assert hyper == create_attack(name, **params).hyperparameters()


@pytest.mark.parametrize("key", sorted(QUICK))
def test_eot_on_a_deterministic_model_changes_only_the_cost(key, trained_lenet, batch, plain_results):
    """Identical passes: the averages equal the single pass up to float round-off (C&W and APGD-Linf
    are even exact: their averages are anchored at the first pass, and a sign ignores round-off)."""
    name, params = QUICK[key]
    x, y = batch[0][:N], batch[1][:N]
    plain = plain_results[key]
    assert plain.success.any()  # the comparison is about real attack trajectories
    eot = _run(name, params | {"eot": 3}, trained_lenet, x, y)
    assert torch.allclose(eot.x_adv, plain.x_adv, rtol=0, atol=1e-5), (eot.x_adv - plain.x_adv).abs().max()
    assert torch.equal(eot.success, plain.success)
    assert torch.equal(eot.queries, 3 * plain.queries)  # same trajectory, every pass counted
    if key in ("apgd", "apgd-ce", "apgd-dlr", "cw"):
        assert torch.equal(eot.x_adv, plain.x_adv)


@pytest.mark.parametrize("key", sorted(QUICK))
def test_eot_is_recorded_and_rebuilds(key):
    name, params = QUICK[key]
    attack = create_attack(name, **params, eot=3)
    assert attack.eot == 3 and attack.hyperparameters()["eot"] == 3
    assert create_attack(name, **attack.hyperparameters()).hyperparameters() == attack.hyperparameters()


@pytest.mark.parametrize("name", EOT_ATTACKS)
def test_the_registry_and_the_presets_pass_eot_through(name):
    assert "eot" in ATTACKS.parameters(name)
    presets = [p for p in PRESETS.names() if PRESETS.get(p).attack == name]
    for preset_name in presets:
        eps = None if name in ("cw", "deepfool") else 0.1
        attack = AttackSpec(preset_name, params={"eot": 4}).build(eps)
        assert type(attack) is ATTACKS.get(name) and attack.hyperparameters()["eot"] == 4, preset_name


@pytest.mark.parametrize("name", EOT_ATTACKS)
@pytest.mark.parametrize("eot", [0, -2, 1.5])
def test_bad_eot_values_are_rejected(name, eot):
    eps = None if name in ("cw", "deepfool") else 0.1
    with pytest.raises(ValueError, match="eot"):
        create_attack(name, eps=eps, eot=eot)


def test_eot_apgd_is_at_least_as_strong_against_the_randomized_model(trained_lenet, batch):
    x, y = batch
    defended = apply_defense(trained_lenet, "random-resize-pad")
    accuracy, queries = {}, {}
    for eot in (1, 8):
        torch.manual_seed(0)
        adv = create_attack("apgd", eps=0.1, n_iter=10, eot=eot)(defended, x, y,
                                                                  generator=torch.Generator().manual_seed(0))
        queries[eot] = adv.queries
        torch.manual_seed(100)  # the same 10 draws judge both attacks
        accuracy[eot] = prediction_spread(defended, adv.x_adv, y, draws=10)[0]
    # measured (CPU, attack seeds 0-2): plain 61.3-62.3%, EOT-8 56.3-58.0% expected accuracy; the defended
    # model's expected clean accuracy is 86.6% on these 100 images
    assert accuracy[8] <= accuracy[1], accuracy
    assert accuracy[1] < 0.75  # both attacks do work: a broken attack would leave ~87%
    assert (queries[8] % 8 == 0).all() and queries[8].sum() > 4 * queries[1].sum()  # every pass counted
