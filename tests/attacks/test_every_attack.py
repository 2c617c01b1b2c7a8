"""The attack contract, checked for every registered attack (a new attack must add a fast setting)."""

from __future__ import annotations

import pytest
import torch

from robustloss.attacks import ATTACKS, create_attack

N = 100
# name -> (constructor parameters for a quick run, minimum accuracy drop it must cause)
FAST = {
    "fgsm": ({"eps": 0.2}, 0.3),
    "fgsm-rs": ({"eps": 0.2}, 0.2),
    "bim": ({"eps": 0.2, "steps": 10, "step_size": 0.03}, 0.4),
    "pgd": ({"eps": 0.2, "steps": 10, "step_size": 0.03}, 0.4),
    "mim": ({"eps": 0.2, "steps": 10, "step_size": 0.03}, 0.4),
    "pgd-l2": ({"eps": 2.5, "steps": 10}, 0.3),
    "apgd": ({"eps": 0.2, "n_iter": 10}, 0.4),
    "apgd-ce": ({"eps": 0.2, "n_iter": 10}, 0.4),
    "apgd-dlr": ({"eps": 0.2, "n_iter": 10}, 0.4),
    "apgd-t": ({"eps": 0.2, "n_iter": 10, "n_target_classes": 3}, 0.4),
    "fab": ({"norm": "linf", "n_iter": 10}, 0.8),
    "fab-t": ({"norm": "linf", "n_iter": 10, "n_target_classes": 3}, 0.8),
    "square": ({"eps": 0.3, "n_queries": 300}, 0.3),
    "cw": ({"steps": 50, "binary_search_steps": 4, "initial_const": 1.0, "lr": 0.05}, 0.5),
    "deepfool": ({"max_iter": 20}, 0.5),
    "spsa": ({"eps": 0.3, "steps": 10, "samples": 32, "lr": 0.05}, 0.3),
    "simba": ({"eps": 1.0, "max_queries": 150}, 0.3),
    "transfer": ({"eps": 0.3, "method": "mim"}, 0.1),
    "gaussian-noise": ({"sigma": 0.6, "draws": 3}, 0.2),
    "rotation": ({"max_degrees": 60, "draws": 3}, 0.1),
}


def test_every_registered_attack_has_a_fast_setting():
    assert set(ATTACKS.names()) == set(FAST), "add new attacks to FAST"


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, N))


@pytest.mark.parametrize("name", sorted(FAST))
def test_attack_contract(name, trained_lenet, batch, cnn3_substitute):
    x, y = batch
    params, drop = FAST[name]
    if name == "transfer":
        params = params | {"substitute": str(cnn3_substitute)}
    attack = create_attack(name, **params)
    before = {k: v.clone() for k, v in trained_lenet.state_dict().items()}
    for p in trained_lenet.parameters():
        p.grad = None
    a = attack(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))
    b = attack(trained_lenet, x, y, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        clean = (trained_lenet(x).argmax(1) == y).float().mean().item()
    assert (a.pred == y).float().mean().item() <= clean - drop, f"{name} barely lowers accuracy"
    assert a.x_adv.min() >= 0 and a.x_adv.max() <= 1
    if attack.norm == "linf" and attack.eps is not None:
        assert (a.linf <= attack.eps + 1e-5).all()
    if attack.norm == "l2" and attack.eps is not None:
        assert (a.l2 <= attack.eps + 1e-4).all()
    assert torch.equal(a.x_adv, b.x_adv), f"{name} is not reproducible under a fixed seed"
    assert a.queries.dtype == torch.int64 and (a.queries >= 0).all()
    assert all(torch.equal(v, before[k]) for k, v in trained_lenet.state_dict().items())
    assert all(p.grad is None for p in trained_lenet.parameters())
    rebuilt = create_attack(name, **attack.hyperparameters())  # hyper-parameters describe the attack fully
    assert rebuilt.hyperparameters() == attack.hyperparameters()
