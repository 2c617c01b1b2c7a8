"""Square Attack: agreement with torchattacks.Square (3.5.1) on the trained LeNet-5, its edge over
gradient attacks behind a non-differentiable input quantiser, targeted runs, budgets, query
counting, reproducibility and per-sample randomness.

Agreement tolerances. Both attacks are randomised, so on the same N images each sample's verdict
(robust or not) differs between the two runs by chance. Only the discordant samples carry
information: b = robust against ours but fooled by theirs, c = the reverse. If the two attacks are
equally strong, each discordant sample goes either way with probability 1/2, so b - c has mean 0
and standard deviation sqrt(b + c) (McNemar's test; a binomial on the b + c discordant samples).
The tests allow 3 such standard deviations (two-sided p ~ 0.003). This is tighter than treating the
two robust accuracies as independent binomials, sqrt(2 p (1 - p) / N), because the hard samples are
hard for both attacks, and it is derived from the measured disagreement, not picked to pass.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustloss.attacks import create_attack, preset
from robustloss.attacks.square import Square, p_schedule, square_bump, square_side

SIGMAS = 3.0  # allowed excess of b - c, in binomial standard deviations sqrt(b + c)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Probe(nn.Module):
    """Counts the images the attack evaluates and checks that no autograd is involved."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.batch_sizes, self.grad = model, [], []
        self.eval()

    def forward(self, x):
        self.batch_sizes.append(len(x))
        self.grad.append(torch.is_grad_enabled())
        return self.model(x)


class Quantised(nn.Module):
    """The model behind an input quantiser to 5 levels: round() has zero gradient almost everywhere."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x):
        return self.model(torch.round(4 * x) / 4)


def robust(model, x_adv, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def discordant(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[int, int]:
    """(robust against ours only, robust against theirs only)."""
    return int((ours & ~theirs).sum()), int((~ours & theirs).sum())


def torchattacks_square(model, x, y, **params) -> torch.Tensor:
    torchattacks = pytest.importorskip("torchattacks")
    with torch.random.fork_rng():  # torchattacks seeds the global RNG; keep that out of other tests
        return torchattacks.Square(model, **params)(x, y)


@pytest.fixture(scope="module")
def batch500(mnist5k):
    return mnist5k.test.batch(slice(0, 500))


# --- agreement with torchattacks ------------------------------------------------------------------


def test_linf_agrees_with_torchattacks_and_skipping_no_op_queries_only_helps(trained_lenet, batch500):
    # eps 0.3 with 1000 queries fools all 500 images for both implementations (measured 0.0% vs 0.0%),
    # a comparison that cannot fail; at 100 queries robust accuracy is still measurable (~5-14%).
    x, y = batch500
    theirs = robust(trained_lenet, torchattacks_square(trained_lenet, x, y, norm="Linf", eps=0.3, n_queries=100,
                                                       seed=0), y)
    # same algorithm as AutoAttack/torchattacks (a query spent on every candidate): agree within noise
    plain = create_attack("square", eps=0.3, n_queries=100, flip_unchanged=False)(trained_lenet, x, y,
                                                                                   generator=seeded())
    b, c = discordant(~plain.success, theirs)
    assert abs(b - c) <= SIGMAS * math.sqrt(b + c), f"plain {b} vs torchattacks {c} discordant samples"
    # default (no query on a candidate that changes nothing): not weaker than torchattacks beyond noise
    ours = create_attack("square", eps=0.3, n_queries=100)(trained_lenet, x, y, generator=seeded())
    b, c = discordant(~ours.success, theirs)
    assert b - c <= SIGMAS * math.sqrt(b + c), f"ours {b} vs torchattacks {c} discordant samples"
    # and the saved queries show: measured 5.2% vs 13.6% robust (1 vs 43 discordant samples)
    b, c = discordant(~ours.success, ~plain.success)
    assert c - b > SIGMAS * math.sqrt(b + c), f"flipping no-op candidates should help: {b} vs {c}"
    assert (ours.linf <= 0.3 + 1e-5).all() and (plain.linf <= 0.3 + 1e-5).all()


def test_l2_agrees_with_torchattacks(trained_lenet, mnist5k):
    # 250 images and 300 queries keep this fast (measured: 68.0% vs 67.2% robust, 8 / 6 discordant);
    # the McNemar tolerance widens accordingly with the discordant count.
    x, y = mnist5k.test.batch(slice(0, 250))
    theirs = robust(trained_lenet, torchattacks_square(trained_lenet, x, y, norm="L2", eps=2.0, n_queries=300,
                                                       seed=0), y)
    ours = create_attack("square", eps=2.0, norm="l2", n_queries=300)(trained_lenet, x, y, generator=seeded())
    b, c = discordant(~ours.success, theirs)
    assert abs(b - c) <= SIGMAS * math.sqrt(b + c), f"ours {b} vs torchattacks {c} discordant samples"
    assert (ours.l2 <= 2.0 + 1e-4).all()
    with torch.no_grad():
        clean = (trained_lenet(x).argmax(1) == y).float().mean().item()
    assert (~ours.success).float().mean().item() < clean - 0.15  # it is an attack, not a no-op


# --- where gradients fail ---------------------------------------------------------------------------


def test_square_breaks_an_input_quantiser_that_stops_pgd(trained_lenet, mnist5k):
    x, y = mnist5k.test.batch(slice(0, 200))
    model = Quantised(trained_lenet)
    pgd = create_attack("pgd", eps=0.3, steps=20, step_size=0.03)(model, x, y, generator=seeded())
    square = create_attack("square", eps=0.3, n_queries=300)(model, x, y, generator=seeded())
    pgd_acc = (~pgd.success).float().mean().item()
    square_acc = (~square.success).float().mean().item()
    # measured: clean 91.5%, PGD 91.5% (the gradient of round() is zero), Square 1.5%
    assert pgd_acc > 0.5, f"PGD through round() should be stuck, got {pgd_acc:.3f}"
    assert square_acc < pgd_acc - 0.6, f"Square {square_acc:.3f} vs PGD {pgd_acc:.3f}"
    assert (square.linf <= 0.3 + 1e-5).all()


# --- targeted ------------------------------------------------------------------------------------


def test_targeted_square_reaches_most_targets_within_budget(trained_lenet, mnist5k):
    x, y = mnist5k.test.batch(slice(0, 100))
    target = (y + 1) % 10
    attack = create_attack("square", eps=0.4, n_queries=300, targeted=True)
    result = attack(trained_lenet, x, y, target=target, generator=seeded())
    hit = (result.pred == target).float().mean().item()
    assert hit > 0.7, f"targeted hit rate {hit:.2f}"  # measured 0.88; chance is 0.1
    assert torch.equal(result.success, result.pred == target)
    assert (result.linf <= 0.4 + 1e-5).all() and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert result.objective == "ce"  # the cross-entropy to the target drives the targeted search
    l2 = create_attack("square", eps=3.0, norm="l2", n_queries=100, targeted=True)
    result = l2(trained_lenet, x[:40], y[:40], target=target[:40], generator=seeded())
    assert (result.l2 <= 3.0 + 1e-4).all()
    with pytest.raises(ValueError, match="target"):
        attack(trained_lenet, x, y)


# --- queries, reproducibility, randomness ---------------------------------------------------------


@pytest.mark.parametrize("norm, eps", [("linf", 0.15), ("l2", 1.5)])
def test_query_counting_and_a_shrinking_batch(trained_lenet, mnist5k, norm, eps):
    x, y = mnist5k.test.batch(slice(0, 40))
    with torch.no_grad():
        wrong = trained_lenet(x).argmax(1)
    y = y.clone()
    y[:3] = (wrong[:3] + 1) % 10  # relabelled: already misclassified at the clean image
    probe = Probe(trained_lenet)
    n_queries = 50
    result = create_attack("square", eps=eps, norm=norm, n_queries=n_queries, restarts=2)(
        probe, x, y, generator=seeded())
    at_once = wrong != y  # misclassified at the clean image: the 3 relabelled and the model's own errors
    assert at_once[:3].all()
    assert torch.equal(result.queries[at_once], torch.ones(int(at_once.sum()), dtype=torch.int64))
    assert torch.equal(result.x_adv[at_once], x[at_once])  # nothing to do: the clean image is returned
    attacked = ~at_once
    fooled, standing = result.success & attacked, ~result.success
    assert fooled.any() and standing.any(), "pick eps so that both cases occur"
    assert (result.queries[standing] == 1 + 2 * n_queries).all()  # clean + 2 runs of n_queries
    assert (result.queries[fooled] >= 2).all() and (result.queries[fooled] <= 2 * n_queries).all()
    assert result.queries[fooled].float().mean() < n_queries  # the fooled stopped early
    # only the samples still standing are evaluated: the images asked for are the queries (+ final pass)
    assert sum(probe.batch_sizes) == int(result.queries.sum()) + len(x)
    assert min(probe.batch_sizes) < len(x) - 3 and not any(probe.grad)


def test_fixed_seed_reproduces_and_draws_do_not_depend_on_the_other_samples(trained_lenet, mnist5k):
    x, y = mnist5k.test.batch(slice(0, 40))
    attack = create_attack("square", eps=0.1, n_queries=60)
    a = attack(trained_lenet, x, y, generator=seeded(3))
    b = attack(trained_lenet, x, y, generator=seeded(3))
    c = attack(trained_lenet, x, y, generator=seeded(4))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)
    # other images in rows 0-9 (so other samples fall at other times): rows 10-39 are unaffected
    x2, y2 = x.clone(), y.clone()
    x2[:10], y2[:10] = mnist5k.test.batch(slice(100, 110))
    d = attack(trained_lenet, x2, y2, generator=seeded(3))
    assert torch.equal(a.x_adv[10:], d.x_adv[10:]) and torch.equal(a.queries[10:], d.queries[10:])
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):  # the global RNG is never used
        state = torch.random.get_rng_state()
        create_attack("square", eps=eps, norm=norm, n_queries=5)(trained_lenet, x, y, generator=seeded())
        assert torch.equal(state, torch.random.get_rng_state())


# --- pieces ---------------------------------------------------------------------------------------


def test_p_schedule_halves_at_the_papers_thresholds_rescaled_to_the_budget():
    # 10 000 queries: the paper's iterations; halving after 10, 50, 200, ... 8000
    assert p_schedule(0.8, 10, 10_000) == 0.8 and p_schedule(0.8, 11, 10_000) == 0.4
    assert p_schedule(0.8, 50, 10_000) == 0.4 and p_schedule(0.8, 51, 10_000) == 0.2
    assert p_schedule(0.8, 8000, 10_000) == 0.8 / 256 and p_schedule(0.8, 9999, 10_000) == 0.8 / 512
    # 1000 queries: the same shape, ten times faster (step 20 -> 200 is the 200 threshold)
    assert p_schedule(0.8, 1, 1000) == 0.8 and p_schedule(0.8, 2, 1000) == 0.4
    assert p_schedule(0.8, 20, 1000) == 0.8 / 4 and p_schedule(0.8, 21, 1000) == 0.8 / 8
    # MNIST (28 x 28): p = 0.8 covers a 25 x 25 square; L2 sides are odd and at least 3
    assert square_side(0.8, 28, 28, "linf") == 25 and square_side(0.8 / 512, 28, 28, "linf") == 1
    assert square_side(0.8 / 512, 28, 28, "l2") == 3 and square_side(0.05, 28, 28, "l2") == 7
    assert square_side(1.0, 28, 20, "linf") == 20  # never larger than the image


def test_l2_bump_matches_the_reference_shape():
    torchattacks = pytest.importorskip("torchattacks")
    reference = torchattacks.Square(nn.Identity(), norm="L2")
    reference.device = "cpu"
    for side in (3, 5, 7, 25):
        bump = square_bump(side)
        assert bump.norm().item() == pytest.approx(1.0)
        assert bump[: side // 2].sum() > 0 and bump[side // 2:].sum() < 0  # two halves of opposite sign
        with torch.random.fork_rng():
            theirs = reference.eta(side).double()  # randomly transposed
        assert torch.allclose(bump, theirs, atol=1e-6) or torch.allclose(bump.T, theirs, atol=1e-6)


def test_defaults_presets_and_validation():
    attack = create_attack("square", eps=0.3)
    assert attack.hyperparameters() == {"eps": 0.3, "targeted": False, "objective": "cw", "norm": "linf",
                                        "n_queries": 5000, "p_init": 0.8, "restarts": 1, "flip_unchanged": True}
    assert create_attack("square", **attack.hyperparameters()).hyperparameters() == attack.hyperparameters()
    l2 = create_attack("square", eps=2.0, norm="l2", targeted=True, objective="adaptive")
    assert l2.norm == "l2" and Square.norm == "linf" and l2.objective_name == "ce"
    assert preset("square-autoattack").params == {"n_queries": 5000, "p_init": 0.8, "restarts": 1}
    for bad in ({"eps": None}, {"norm": "l1"}, {"n_queries": 0}, {"p_init": 0.0}, {"p_init": 1.5}, {"restarts": 0},
                {"objective": "ce"}, {"targeted": True, "objective": "cw"}):
        bad = {"eps": 0.3} | bad
        with pytest.raises(ValueError):
            create_attack("square", **bad)
