"""Expectation over Transformation (``eot=``) on the iterative gradient attacks."""

from __future__ import annotations

import pytest
import torch

from robustloss.attacks import create_attack
from robustloss.defenses import apply_defense
from robustloss.evaluate.stochastic import prediction_spread

N = 100
QUICK = {
    "fgsm": {"eps": 0.1},
    "bim": {"eps": 0.1, "steps": 5, "step_size": 0.03},
    "pgd": {"eps": 0.1, "steps": 5, "step_size": 0.03},
    "mim": {"eps": 0.1, "steps": 5, "step_size": 0.03},
    "pgd-l2": {"eps": 1.5, "steps": 5},
}


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, N))


@pytest.mark.parametrize("name", sorted(QUICK))
def test_eot_1_is_the_plain_attack_bit_for_bit(name, trained_lenet, batch):
    x, y = batch
    plain = create_attack(name, **QUICK[name])
    explicit = create_attack(name, **QUICK[name], eot=1)
    a = plain(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    b = explicit(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert "eot" not in explicit.hyperparameters()  # records and cache keys of plain attacks do not change
    assert explicit.hyperparameters() == plain.hyperparameters()


@pytest.mark.parametrize("name", sorted(QUICK))
def test_eot_is_recorded_and_rebuilds(name):
    attack = create_attack(name, **QUICK[name], eot=4)
    assert attack.hyperparameters()["eot"] == 4
    assert create_attack(name, **attack.hyperparameters()).hyperparameters() == attack.hyperparameters()


def test_eot_on_a_deterministic_model_changes_only_the_cost(trained_lenet, batch):
    x, y = batch
    params = {"eps": 0.1, "steps": 5, "step_size": 0.03, "early_stop": False}
    plain = create_attack("pgd", **params)(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    eot = create_attack("pgd", **params, eot=3)(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.x_adv, eot.x_adv)  # identical passes: the averaged gradient has the same sign
    assert (eot.queries == 5 * 3 + 1).all() and (plain.queries == 5 + 1).all()  # every pass is counted


@pytest.mark.parametrize("eot", [0, -1, 1.5])
def test_bad_eot_values_are_rejected(eot):
    with pytest.raises(ValueError, match="eot"):
        create_attack("pgd", eps=0.1, eot=eot)


def test_eot_pgd_is_at_least_as_strong_against_the_randomized_model(trained_lenet, batch):
    x, y = batch
    defended = apply_defense(trained_lenet, "random-resize-pad")
    # early_stop=False: against a random model a "success" on one draw is luck, so early stopping would
    # keep iterates that fool a single draw only (measured: ~15 points weaker in expectation).
    params = {"eps": 0.1, "steps": 10, "step_size": 0.025, "early_stop": False}
    accuracy = {}
    for eot in (1, 4):
        torch.manual_seed(0)
        adv = create_attack("pgd", **params, eot=eot)(defended, x, y, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(100)  # the same 10 draws judge both attacks
        accuracy[eot] = prediction_spread(defended, adv.x_adv, y, draws=10)[0]
    # measured (CPU, attack seeds 0-2): plain 53.3-54.6%, EOT-4 51.3-51.7% expected accuracy (EOT-8: 51.0-51.2%);
    # the defended model's clean accuracy is 85.6% on these 100 images
    assert accuracy[4] <= accuracy[1], accuracy
    assert accuracy[1] < 0.75  # both attacks do work: a broken attack would leave ~85%
