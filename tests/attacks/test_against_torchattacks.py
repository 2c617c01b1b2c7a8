"""Agreement with an independent implementation (torchattacks, a dev-only dependency)."""

from __future__ import annotations

import pytest
import torch

from robustloss.attacks import create_attack

torchattacks = pytest.importorskip("torchattacks")
N = 500


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, N))


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_fgsm_matches_torchattacks(trained_lenet, batch, eps):
    x, y = batch
    ours = create_attack("fgsm", eps=eps)(trained_lenet, x, y)
    theirs = torchattacks.FGSM(trained_lenet, eps=eps)(x, y)
    assert abs((ours.pred == y).float().mean().item() - accuracy(trained_lenet, theirs, y)) <= 0.005


@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_pgd_without_random_start_matches_torchattacks(trained_lenet, batch, eps):
    x, y = batch
    steps, step = 20, 2.5 * eps / 20
    final_iterate = create_attack("pgd", eps=eps, steps=steps, step_size=step, random_start=False, early_stop=False)
    ours = final_iterate(trained_lenet, x, y)
    theirs = torchattacks.PGD(trained_lenet, eps=eps, alpha=step, steps=steps, random_start=False)(x, y)
    ours_acc, theirs_acc = (ours.pred == y).float().mean().item(), accuracy(trained_lenet, theirs, y)
    assert abs(ours_acc - theirs_acc) <= 0.005
    # keeping the first fooling iterate (our default) can only find more adversarial examples
    early = create_attack("pgd", eps=eps, steps=steps, step_size=step, random_start=False)(trained_lenet, x, y)
    assert (early.pred == y).float().mean().item() <= ours_acc
