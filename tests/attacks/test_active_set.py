"""Active-set attacks: computing only on the samples still standing gives the per-sample results of
the full-batch loop (same seed), and really drops finished samples from the batch."""

from __future__ import annotations

import pytest
import torch

from robustloss.attacks import create_attack

N = 300


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, N))


def _run(attack, model, x, y, active: bool):
    attack.active_set = active
    return attack(model, x, y, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name, params", [
    ("pgd", {"eps": 0.15, "steps": 20, "step_size": 0.02}),
    ("mim", {"eps": 0.15, "steps": 20, "step_size": 0.02}),
    ("bim", {"eps": 0.1, "steps": 10, "step_size": 0.01}),
    ("pgd", {"eps": 0.15, "steps": 10, "step_size": 0.03, "restarts": 2}),
    ("pgd-l2", {"eps": 1.5, "steps": 20}),
    ("pgd", {"eps": 0.15, "steps": 10, "step_size": 0.03, "targeted": True}),
])
def test_active_set_matches_the_full_batch_loop(trained_lenet, batch, name, params):
    x, y = batch
    attack = create_attack(name, **params)
    kwargs = {"target": (y + 1) % 10} if params.get("targeted") else {}
    results = []
    for active in (False, True):
        attack.active_set = active
        results.append(attack(trained_lenet, x, y, generator=torch.Generator().manual_seed(0), **kwargs))
    full, active = results
    # Only float rounding differences between batch sizes may flip a borderline sample: none did here.
    assert torch.equal(full.success, active.success)
    assert torch.equal(full.queries, active.queries)
    assert torch.allclose(full.x_adv, active.x_adv, atol=1e-5)
    assert 0.2 < full.success.float().mean() < 1.0  # a real mix of early and late finishers


def test_finished_samples_leave_the_batch(trained_lenet, batch):
    x, y = batch
    sizes = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            sizes.append(len(images))
            return self.inner(images)

    model = Counting(trained_lenet).eval()
    attack = create_attack("pgd", eps=0.3, steps=40, step_size=0.01)
    for active in (False, True):
        sizes.clear()
        _run(attack, model, x, y, active)
        work = sum(sizes)
        if not active:
            full_work = work
    # eps 0.3 fools most digits within a few steps: the active set does a fraction of the full loop's work
    assert work < 0.5 * full_work
    assert min(sizes) < len(x)


@pytest.mark.parametrize("name, params", [
    ("apgd-ce", {"eps": 0.1, "n_iter": 20}),
    ("apgd-dlr", {"eps": 0.1, "n_iter": 20, "restarts": 2}),
    ("apgd-ce", {"eps": 1.5, "n_iter": 20, "norm": "l2"}),
    ("apgd-t", {"eps": 0.1, "n_iter": 10, "n_target_classes": 3}),
])
def test_apgd_active_set_matches_the_full_batch_loop(trained_lenet, batch, name, params):
    x, y = batch
    attack = create_attack(name, **params)
    full, active = (_run(attack, trained_lenet, x, y, flag) for flag in (False, True))
    assert torch.equal(full.success, active.success)
    assert torch.equal(full.queries, active.queries)
    assert torch.allclose(full.x_adv, active.x_adv, atol=1e-5)
    assert 0.2 < full.success.float().mean() < 1.0
