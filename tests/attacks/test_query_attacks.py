"""SPSA and SimBA, the query-based (gradient-free) attacks: they lower accuracy using outputs
only, respect [0, 1] (and SPSA its L-inf budget), count their queries, leave the model untouched,
reach targets, are reproducible; SPSA's estimate follows the true gradient and its chunking is
invisible; SimBA's accept / reject step and DCT basis are checked by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustloss.attacks.simba  # noqa: F401  (registration happens at import)
import robustloss.attacks.spsa  # noqa: F401
from robustloss.attacks import AttackBudgetWarning, create_attack, get_objective, preset
from robustloss.attacks.simba import SimBA, dct_matrix
from robustloss.attacks.spsa import SPSA


class Probe(nn.Module):
    """Wraps a model and records what the attack asks of it: batch sizes, the number of images
    evaluated, and whether autograd was on (a query-based attack must never need it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.batch_sizes: list[int] = []
        self.grad_enabled: list[bool] = []
        self.eval()  # a fresh module is in training mode; the attack would restore that mode

    def forward(self, x):
        self.batch_sizes.append(len(x))
        self.grad_enabled.append(torch.is_grad_enabled() or x.requires_grad)
        return self.model(x)

    @property
    def images(self) -> int:
        return sum(self.batch_sizes)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.test.batch(slice(0, 40))


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# --- on the trained LeNet ------------------------------------------------------------------------

ATTACKS = {  # budgets chosen so that a 3-epoch LeNet falls clearly in a few seconds
    "spsa": dict(eps=0.3, steps=10, samples=32, lr=0.05),
    "simba": dict(eps=1.5, max_queries=300),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_lowers_accuracy_from_outputs_only(trained_lenet, batch, name):
    x, y = batch
    probe = Probe(trained_lenet)
    result = create_attack(name, **ATTACKS[name])(probe, x, y, generator=seeded())
    clean_acc, adv_acc = accuracy(trained_lenet, x, y), (result.pred == y).float().mean().item()
    assert clean_acc > 0.8
    assert adv_acc < clean_acc - 0.4, f"{name}: {clean_acc:.2f} -> {adv_acc:.2f}"
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.equal(result.success, result.pred != y)
    assert not any(probe.grad_enabled), "query attacks must not use autograd"
    # queries count every image the attack evaluated; the base class adds one final judgement pass
    assert probe.images == int(result.queries.sum()) + len(x)
    if name == "spsa":
        assert result.linf.max().item() <= 0.3 + 1e-5


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_model_is_left_untouched(trained_lenet, batch, name):
    x, y = batch
    before = {k: v.clone() for k, v in trained_lenet.state_dict().items()}
    for p in trained_lenet.parameters():
        p.grad = None
    params = dict(eps=0.3, steps=2, samples=4, lr=0.15) if name == "spsa" else dict(eps=1.0, max_queries=10)
    trained_lenet.train()
    create_attack(name, **params)(trained_lenet, x[:10], y[:10], generator=seeded())
    assert trained_lenet.training, "the model's mode must be restored"
    trained_lenet.eval()
    for key, value in trained_lenet.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in trained_lenet.parameters())


TARGETED = {
    "spsa": (dict(eps=0.3, steps=10, samples=32, lr=0.1), 0.2),
    "simba": (dict(eps=1.0, max_queries=200), 0.6),
}


@pytest.mark.parametrize("name", sorted(TARGETED))
def test_targeted_reaches_targets_more_than_chance(trained_lenet, batch, name):
    x, y = batch
    target = (y + 1) % 10
    params, floor = TARGETED[name]
    attack = create_attack(name, targeted=True, **params)
    result = attack(trained_lenet, x, y, target=target, generator=seeded())
    hit_rate = (result.pred == target).float().mean().item()
    assert hit_rate > floor, f"{name}: {hit_rate:.2f}"  # chance is 0.1
    assert torch.equal(result.success, result.pred == target)
    with pytest.raises(ValueError, match="target"):
        attack(trained_lenet, x, y)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_fixed_seed_gives_identical_results(trained_lenet, batch, name):
    x, y = batch[0][:8], batch[1][:8]
    params = dict(eps=0.3, steps=3, samples=8, lr=0.1) if name == "spsa" else dict(eps=1.0, max_queries=12)
    attack = create_attack(name, **params)
    a, b = attack(trained_lenet, x, y, generator=seeded(7)), attack(trained_lenet, x, y, generator=seeded(7))
    c = attack(trained_lenet, x, y, generator=seeded(8))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


# --- SPSA ----------------------------------------------------------------------------------------

def small_linear_model(d: int = 64, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).eval()


def test_spsa_gradient_estimate_follows_the_true_gradient():
    model = small_linear_model()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    xg = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    attack = SPSA(eps=0.1, samples=4096, delta=1e-3)
    with torch.no_grad():
        estimate = attack.estimate_gradient(model, get_objective("ce"), x, y, seeded())
    cosine = F.cosine_similarity(estimate.flatten(1), true.flatten(1), dim=1)
    assert cosine.min() > 0.9, cosine
    # unbiased: the scale matches as well, not only the direction
    ratio = estimate.flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1)
    assert torch.allclose(ratio, torch.ones(4), atol=0.2), ratio


def test_spsa_chunking_changes_nothing_and_bounds_the_forward_batch():
    model = small_linear_model(d=16, classes=4)
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0])
    objective = get_objective("ce")
    results, estimates = {}, {}
    for max_batch in (4, 64, 4096):  # 4 < 2 * 5 images: the images themselves are split
        probe = Probe(model)
        attack = SPSA(eps=0.2, steps=4, samples=50, lr=0.05, max_batch=max_batch)
        with torch.no_grad():
            estimates[max_batch] = attack.estimate_gradient(probe, objective, x, y, seeded(3))
        assert max(probe.batch_sizes) <= max_batch
        probe.batch_sizes.clear()
        results[max_batch] = attack(probe, x, y, generator=seeded(3))
        assert max(probe.batch_sizes[:-1]) <= max_batch  # the last pass is the base class's judgement
    for max_batch in (4, 64):
        assert torch.allclose(estimates[max_batch], estimates[4096], atol=1e-5)
        assert torch.allclose(results[max_batch].x_adv, results[4096].x_adv, atol=1e-5)
        assert torch.equal(results[max_batch].queries, results[4096].queries)


def test_spsa_counts_queries_and_keeps_successes():
    model = small_linear_model(d=16, classes=4)
    x = torch.rand(6, 1, 4, 4)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:2] = (pred[:2] + 1) % 4  # two samples are misclassified from the start
    steps, samples = 3, 5
    result = SPSA(eps=0.01, steps=steps, samples=samples, lr=0.004)(model, x, y, generator=seeded())
    # already fooled: one check, returned unchanged
    assert torch.equal(result.queries[:2], torch.ones(2, dtype=torch.int64))
    assert torch.equal(result.x_adv[:2], x[:2])
    # a budget this small fools no one else: every step and every check was paid
    assert not result.success[2:].any()
    assert (result.queries[2:] == steps * (2 * samples + 1) + 1).all()
    assert (result.x_adv - x).abs().max() <= 0.01 + 1e-6


def test_spsa_defaults_presets_and_validation():
    assert create_attack("spsa", eps=0.3).hyperparameters() == {
        "eps": 0.3, "targeted": False, "objective": "ce", "steps": 100, "samples": 128, "lr": 0.01,
        "delta": 0.01, "max_batch": 4096}
    for batch_size in (128, 4096, 8192):
        p = preset(f"spsa-mmc-{batch_size}")
        assert p.attack == "spsa" and p.params["samples"] == batch_size and p.params["steps"] == 10
        assert p.params["objective"] == "adaptive"
        create_attack(p.attack, eps=8 / 255, **p.params)
    assert preset("spsa-pc").params | {} == {"steps": 100, "samples": 128, "lr": 0.01, "delta": 0.01}
    assert preset("spsa-pc-10").params["steps"] == 10
    with pytest.warns(AttackBudgetWarning):
        create_attack("spsa", eps=0.3, steps=10)  # 10 Adam steps of ~0.01 cannot reach 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_attack("spsa", eps=8 / 255, steps=10)
    for bad in (dict(steps=0), dict(samples=0), dict(lr=0.0), dict(delta=-1.0), dict(max_batch=1),
                dict(steps=2.5)):
        with pytest.raises(ValueError):
            create_attack("spsa", eps=0.3, **bad)
    with pytest.raises(ValueError, match="eps"):
        create_attack("spsa", eps=None)


# --- SimBA ---------------------------------------------------------------------------------------

class OnePixelModel(nn.Module):
    """Two classes on a 1x1 image: logits (w * x + b, 0)."""

    def __init__(self, w: float, b: float):
        super().__init__()
        self.w, self.b = w, b
        self.calls = 0

    def forward(self, x):
        self.calls += len(x)
        own = self.w * x.flatten(1).sum(1) + self.b
        return torch.stack([own, torch.zeros_like(own)], dim=1)


@pytest.mark.parametrize("basis", ["pixel", "dct"])
@pytest.mark.parametrize(
    "w, b, x0, expected_x, expected_queries, fooled",
    [
        (1.0, 2.0, 0.5, 0.3, 2, False),  # -eps lowers p(class 0): accepted at once
        (-1.0, 2.0, 0.5, 0.7, 3, False),  # -eps raises it: rejected; +eps lowers it: accepted
        (0.0, 2.0, 0.5, 0.5, 3, False),  # neither helps: both rejected, image unchanged
        (-1.0, 2.0, 0.0, 0.2, 2, False),  # -eps is clipped away: known unchanged, no query spent
        (1.0, -0.4, 0.5, 0.3, 2, True),  # the accepted step crosses the boundary
    ],
)
def test_simba_accept_reject_step(basis, w, b, x0, expected_x, expected_queries, fooled):
    model = OnePixelModel(w, b)  # a 1x1 image has exactly one basis direction: one round
    x, y = torch.full((1, 1, 1, 1), x0), torch.tensor([0])
    result = SimBA(eps=0.2, max_queries=10, basis=basis)(model, x, y, generator=seeded())
    assert result.x_adv.item() == pytest.approx(expected_x, abs=1e-6)
    assert result.queries.item() == expected_queries
    assert model.calls == expected_queries + 1  # plus the base class's final judgement
    assert result.success.item() is fooled


def test_simba_targeted_step_raises_the_target_probability():
    model = OnePixelModel(1.0, 2.0)  # target 1: lowering logit 0 raises p(1), so -eps is kept
    x, y, target = torch.full((1, 1, 1, 1), 0.5), torch.tensor([0]), torch.tensor([1])
    result = SimBA(eps=0.2, targeted=True)(model, x, y, target=target, generator=seeded())
    assert result.x_adv.item() == pytest.approx(0.3, abs=1e-6)


def test_dct_basis_is_orthonormal():
    for n in (1, 2, 7, 28):
        d = dct_matrix(n)
        assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    scipy_fft = pytest.importorskip("scipy.fft")
    reference = scipy_fft.dct(np.eye(7), type=2, norm="ortho", axis=0)  # column j = DCT of e_j
    assert np.allclose(dct_matrix(7).numpy(), reference)
    # the directions SimBA-DCT steps along: every (channel, u, v), as whole images
    x = torch.zeros(1, 2, 5, 6, dtype=torch.float64)
    directions = SimBA(eps=1.0, basis="dct")._basis_builder(x)(torch.arange(2 * 5 * 6)).flatten(1)
    assert torch.allclose(directions @ directions.T, torch.eye(60, dtype=torch.float64), atol=1e-12)


def test_simba_dct_order_starts_with_low_frequencies():
    attack = SimBA(eps=1.0, basis="dct", freq_dims=3)
    order = attack.candidate_order(torch.Size((4, 2, 8, 8)), seeded())
    assert torch.equal(order.sort(dim=1).values, torch.arange(128).expand(4, 128))  # permutations
    u, v = (order % 64) // 8, order % 8
    ring = torch.maximum(u, v)
    assert (ring[:, :2 * 9] < 3).all()  # the 3x3 block of both channels comes first
    assert (ring[:, 2 * 9:].diff(dim=1) >= 0).all()  # then ring by ring
    assert not torch.equal(order[0], order[1])  # each image its own random order
    pixel = SimBA(eps=1.0, basis="pixel").candidate_order(torch.Size((2, 1, 4, 4)), seeded())
    assert torch.equal(pixel.sort(dim=1).values, torch.arange(16).expand(2, 16))


def test_simba_never_exceeds_max_queries(trained_lenet, batch):
    x, y = batch[0][:20], batch[1][:20]
    probe = Probe(trained_lenet)
    result = SimBA(eps=0.2, max_queries=25)(probe, x, y, generator=seeded())
    assert result.queries.max() <= 25
    assert (result.queries[~result.success] == 25).all()  # the unfooled spent the whole budget
    assert (~result.success).any()
    assert probe.images == int(result.queries.sum()) + len(x)


def test_simba_defaults_presets_and_validation():
    assert create_attack("simba", eps=1.0).hyperparameters() == {
        "eps": 1.0, "targeted": False, "objective": "ce", "max_queries": 300, "basis": "dct", "freq_dims": None}
    assert SimBA.norm is None  # eps is a step size, not a budget
    assert preset("simba-isce-mnist").params["max_queries"] == 300
    assert preset("simba-isce-cifar").params["max_queries"] == 500
    for bad in (dict(eps=0.0), dict(eps=None), dict(eps=1.0, max_queries=0), dict(eps=1.0, basis="haar"),
                dict(eps=1.0, freq_dims=0), dict(eps=1.0, basis="pixel", freq_dims=4)):
        with pytest.raises(ValueError):
            create_attack("simba", **bad)
