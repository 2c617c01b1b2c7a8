"""Square Attack, in L-inf and L2: a score-based black-box attack by random search.

Reference: M. Andriushchenko, F. Croce, N. Flammarion and M. Hein, "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020 (Algorithms 1-3,
Sec. 3 and 4); defaults as in the Square Attack of AutoAttack's standard version (Croce & Hein,
ICML 2020).

Random search on the loss L (minimised), starting from a point x(0) on the boundary of the
eps-ball. Each step proposes a candidate that differs from the current best point x_best only
inside a randomly placed square window of side s, asks the model once, and keeps the candidate
if it lowers L:

    x_new = P(x_best + square update of side s(p(i)))
    if L(x_new) < L(x_best):  x_best = x_new

The loss (fixed by the paper, not by the ``objective`` argument, as for C&W):

* untargeted: the margin on the logits z, L = z_y - max_{j != y} z_j (the paper's margin loss;
  it is negative exactly when the sample is misclassified);
* targeted: the cross-entropy to the target t, L = -log softmax(z)_t. The paper's code and
  AutoAttack both switch to it for targeted runs: the targeted margin z_t - max_{j != t} z_j is
  flat in every class but the top one, while the cross-entropy rewards any gain in p(t).

Both are minus an objective of ``robustloss.attacks.objectives`` (``cw`` and ``ce``), which is
what results report as ``objective``. ``objective`` is therefore accepted only as None,
``adaptive`` (for center-loss heads the logit margin is the adaptive objective, see C&W) or the
name the attack actually uses (``cw`` untargeted, ``ce`` targeted), so
``create_attack("square", **attack.hyperparameters())`` rebuilds it.

L-inf (Algorithm 2):

* init: vertical stripes, x(0) = clip_[0,1](x + eps * r) with one random sign r per channel and
  image column (constant down each column);
* step: inside a window of side s, every pixel of channel k is set to x + eps * r_k (one random
  sign per channel, the same over the window), then clipped to [0, 1]; outside the window
  x_new = x_best. The result stays on the vertices of the eps-box;
* s = round(sqrt(p * H * W)), at least 1 and at most min(H, W).

L2 (Algorithm 3):

* init: a 5 x 5 grid of tiles of side s0 = min(H, W) // 5 (centred, as in the paper's code),
  each a "pseudo-Gaussian" bump eta(s0) with a random sign per channel, rescaled so that
  ||delta||_2 = eps and clipped to [0, 1];
* eta(s): two halves, the top s // 2 rows and the bottom s - s // 2 rows, with opposite signs;
  each half is a sum of concentric rectangles, i.e. its value at Chebyshev distance d from the
  half's centre is sum_{k=d..K} 1/(k+1)^2 (K the largest distance); each half and the whole are
  normalised to unit L2 norm, and the bump is transposed with probability 1/2;
* step: two windows W1, W2 of side s. Per channel, the new content of W1 is
  eta(s) * r + delta_W1 / ||delta_W1||, rescaled to norm sqrt(max(eps^2 - ||delta||^2, 0) / C
  + ||delta_{W1 u W2}||^2): W1 takes over the mass of both windows plus its share of whatever
  budget is unused; W2 is then zeroed (its mass moved to W1), the whole perturbation is rescaled
  to ||delta||_2 = eps and the image clipped to [0, 1] (clipping only shortens delta);
* s = round(sqrt(p * H * W)), at least 3, made odd, at most min(H, W).

The p-schedule (the paper's, as its code and AutoAttack implement it): p, the fraction of the
image a square covers, starts at p_init and is halved after iterations 10, 50, 200, 500, 1000,
2000, 4000, 6000 and 8000 of a 10 000-query run, so p = p_init / 2^m with m the number of those
thresholds that i * 10000 // n_queries exceeds, i = 0, 1, ... the square step. The rescaling
to the query budget is AutoAttack's for n_queries != 10000 (the paper's code does the same);
integer division avoids the float off-by-one of i / n * 10000 at the thresholds.

Defaults and where they come from:

* ``n_queries = 5000``: AutoAttack's standard version (the paper runs 10 000 and more).
* ``p_init = 0.8``: AutoAttack's standard version, for both norms. The paper's released commands
  use 0.05 (L-inf, ImageNet), 0.3 (certified-defence models) and 0.8 (Madry et al.'s robust
  MNIST model).
* ``flip_unchanged = True``: the paper's code skips candidates that change nothing (below).
* ``restarts = 1``: AutoAttack runs one. With more, later runs attack only the samples still
  standing; per sample the first success is kept, else the run with the lowest loss.
* ``norm = "linf"``: as in APGD, ``norm`` is a class attribute of the contract and this class
  sets ``self.norm`` per instance, read by the base class's budget check.

Differences from the references, on purpose:

* Square positions are uniform over all placements, 0..H-s (inclusive); both references draw
  0..H-s-1, so the last row and column are only reached by larger squares.
* L-inf, ``flip_unchanged = True`` (default): a candidate that would not change x_best (the
  window already holds those signs) is not sent to the model: its signs are flipped, which always
  changes it (for eps > 0, x + eps and x - eps differ after clipping). The paper's code redraws
  the signs until the candidate changes (for one channel that is the same thing; for C > 1 ours
  takes the complementary sign pattern rather than a uniform draw among the other 2^C - 1).
  AutoAttack and torchattacks spend a query on such candidates (``flip_unchanged = False``
  reproduces that). Late in the schedule the squares are 1-2 pixels wide and many candidates
  are such no-ops (measured on MNIST: half of the 1-pixel, a third of the 2-pixel ones), so this
  matters: on the 3-epoch LeNet-5, 500 MNIST test images, eps 0.3 and 100 queries, robust
  accuracy 5.2% with it against 13.6% without (torchattacks: 12.2%). L2 has no such check
  (neither reference has one).
* One evaluation of the clean image comes first (counted): a sample that is already
  misclassified (targeted: already the target) returns the clean image after 1 query; the
  references attack only correctly classified samples and leave that evaluation uncounted.

Randomness comes only from ``generator`` (drawn on the CPU, then moved to the device). Each
restart gets its own generator, seeded from ``generator``, so how long one restart ran does not
shift the next. Inside a run every step draws its random numbers (positions, signs, transposes)
for the whole original batch, and each image uses its own row: an image's draws depend on its
row and the batch size, never on which other images are still being attacked (AutoAttack draws
one window for all images of a step; the paper's code draws one per image, as here).

Reporting: ``queries`` counts model evaluations per sample until the returned example was found:
1 for the clean image, then per run one for x(0) and one per step, so a sample fooled at x(0) of
the first run used 2, at step i (0-based) i + 3. A sample never fooled used
1 + restarts * n_queries and returns its lowest-loss image. Only the samples still standing are
evaluated at each step (the batch shrinks as samples are fooled). Success during the search is
the base class's rule (argmax); the base class's final float32 pass judges the returned images.
AutoAttack's loop takes n_queries steps after x(0) (n_queries + 1 evaluations per run); here
n_queries is the whole run, x(0) included, as in the paper's code.

The model is only ever called under ``torch.no_grad()`` (``GradientFreeAttack``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustloss.attacks.base import GradientFreeAttack
from robustloss.attacks.objectives import Objective
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS

NORMS = ("linf", "l2")
# Sec. 4: p is halved after these iterations of a 10 000-query run.
HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
REFERENCE_BUDGET = 10_000
INIT_GRID = 5  # the L2 init is a 5 x 5 grid of bumps (paper's code)


def p_schedule(p_init: float, step: int, n_queries: int) -> float:
    """Fraction of pixels changed at square step ``step`` (0-based; x(0) is not a step)."""
    rescaled = step * REFERENCE_BUDGET // n_queries
    return p_init / 2 ** sum(rescaled > point for point in HALVING_POINTS)


def square_side(p: float, height: int, width: int, norm: str) -> int:
    """Side of the square window that covers a fraction ``p`` of the image plane."""
    side = round(math.sqrt(p * height * width))
    if norm == "linf":
        side = max(side, 1)
    else:  # L2 needs room for the bump's two halves, and an odd side keeps it centred
        side = max(side, 3)
        side += 1 - side % 2
    return min(side, height, width)


def rectangle_profile(rows: int, cols: int) -> Tensor:
    """Concentric rectangles of weight 1/(k+1)^2 summed: the value at Chebyshev distance d from
    (rows // 2, cols // 2) is sum_{k=d..K} 1/(k+1)^2; unit L2 norm. Shape (rows, cols)."""
    largest = max(rows // 2, cols // 2)
    weights = 1.0 / torch.arange(1, largest + 2, dtype=torch.float64).square()
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} weights[k]
    dist_r = (torch.arange(rows) - rows // 2).abs()[:, None]
    dist_c = (torch.arange(cols) - cols // 2).abs()[None, :]
    profile = tail[torch.maximum(dist_r, dist_c)]
    return profile / profile.norm().clamp_min(1e-12)


def square_bump(side: int) -> Tensor:
    """The L2 update's shape eta(side): a positive top half and a negative bottom half, unit L2 norm."""
    bump = torch.cat([rectangle_profile(side // 2, side), -rectangle_profile(side - side // 2, side)])
    return bump / bump.norm()


def _window_mask(top: Tensor, left: Tensor, side: int, height: int, width: int) -> Tensor:
    """(n, 1, H, W) bool: each image's square of ``side`` pixels at (top, left)."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _window_index(top: Tensor, left: Tensor, side: int, channels: int) -> tuple[Tensor, ...]:
    """Advanced index selecting each image's (C, side, side) window at (top, left)."""
    span = torch.arange(side, device=top.device)
    return (
        torch.arange(len(top), device=top.device)[:, None, None, None],
        torch.arange(channels, device=top.device)[None, :, None, None],
        (top[:, None] + span)[:, None, :, None],
        (left[:, None] + span)[:, None, None, :],
    )


def _signs(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1


def _per_sample(t: Tensor) -> Tensor:
    """Reshape a (N,) tensor to broadcast over (N, C, H, W)."""
    return t.view(-1, 1, 1, 1)


@ATTACKS.register("square")
class Square(GradientFreeAttack):
    """Square Attack (Andriushchenko et al., ECCV 2020), L-inf or L2; see the module docstring."""

    name = "square"
    norm = "linf"  # default; instances set self.norm to their ``norm`` argument

    def __init__(
        self,
        *,
        eps: float,
        norm: str = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        flip_unchanged: bool = True,
        targeted: bool = False,
        objective: str | None = None,
    ):
        if eps is None:
            raise ValueError(f"{self.name}: eps is required (Square is a fixed-budget attack)")
        loss = "ce" if targeted else "cw"  # see the module docstring: the paper fixes the loss
        if objective not in (None, "adaptive", loss):
            what = "the cross-entropy to the target" if targeted else "the logit margin"
            raise ValueError(f"{self.name}: the search minimises {what} (objective {loss!r}); objective must be "
                             f"None, 'adaptive' or {loss!r}, got {objective!r}")
        super().__init__(eps=eps, targeted=targeted, objective=loss)
        if norm not in NORMS:
            raise ValueError(f"{self.name}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if int(n_queries) != n_queries or n_queries < 1:
            raise ValueError(f"{self.name}: n_queries must be an integer >= 1, got {n_queries}")
        if not 0 < p_init <= 1:
            raise ValueError(f"{self.name}: p_init (fraction of the image the first squares cover) must be in "
                             f"(0, 1], got {p_init}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"{self.name}: restarts must be an integer >= 1, got {restarts}")
        self.norm = norm  # instance attribute: overrides the class default, read by the base's budget check
        self.n_queries, self.p_init, self.restarts = int(n_queries), float(p_init), int(restarts)
        self.flip_unchanged = bool(flip_unchanged)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "norm": self.norm, "n_queries": self.n_queries, "p_init": self.p_init, "restarts": self.restarts,
            "flip_unchanged": self.flip_unchanged,
        }

    # --- the attack ---
    def query(self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        # one seed per restart, so a restart's draws do not depend on when the previous one stopped
        seeds = torch.randint(0, 2**62, (self.restarts,), generator=generator).tolist()
        result = x.clone()  # samples misclassified from the start keep the clean image
        found = self.is_success(model(x), y, goal)
        queries = torch.ones(len(x), dtype=torch.int64, device=x.device)
        best_loss = torch.full((len(x),), float("inf"), device=x.device)
        for seed in seeds:
            rows = (~found).nonzero().squeeze(1)
            if len(rows) == 0:
                break
            run_generator = torch.Generator().manual_seed(seed)
            x_run, hit, used, loss = self._single_run(model, x, y, goal, objective, rows, run_generator)
            queries[rows] += used
            better = hit | (loss < best_loss[rows])  # a success always wins, else the lower loss
            result[rows[better]] = x_run[better]
            best_loss[rows] = torch.minimum(best_loss[rows], loss)
            found[rows] = hit
        return result, queries

    def _evaluate(self, model: nn.Module, x_adv: Tensor, y: Tensor, goal: Tensor,
                  objective: Objective) -> tuple[Tensor, Tensor]:
        """(loss to minimise, fooled?) per sample: one model evaluation. The loss is minus the
        objective: the logit margin (untargeted) or the cross-entropy to the target."""
        logits = model(x_adv).float()
        return -objective(logits, goal, self.targeted), self.is_success(logits, y, goal)

    def _single_run(self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
                    rows: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One run on the images ``rows`` of the batch: (returned images, fooled?, evaluations used,
        lowest loss), each indexed like ``rows``. Random draws are made for the whole batch."""
        x_start = self._start(x, generator)[rows]  # drawn for all images: each keeps its own row
        x_rows, y_rows, goal_rows = x[rows], y[rows], goal[rows]
        x_best = x_start.clone()
        loss, fooled = self._evaluate(model, x_best, y_rows, goal_rows, objective)
        used = torch.where(fooled, 1, self.n_queries).to(torch.int64)
        _, _, height, width = x.shape
        for step in range(self.n_queries - 1):
            side = square_side(p_schedule(self.p_init, step, self.n_queries), height, width, self.norm)
            draws = self._draw(len(x), side, x.shape[1], height, width, generator)
            active = (~fooled).nonzero().squeeze(1)
            if len(active) == 0:
                break
            mine = rows[active].cpu()  # the draws live on the CPU
            picked = {key: value[mine].to(x.device) for key, value in draws.items()}
            if self.norm == "linf":
                candidate = self._linf_candidate(x_rows[active], x_best[active], side, picked)
            else:
                candidate = self._l2_candidate(x_rows[active], x_best[active], side, picked)
            new_loss, hit = self._evaluate(model, candidate, y_rows[active], goal_rows[active], objective)
            # keep improvements; a fooling candidate is kept even if its loss is higher (targeted CE)
            keep = (new_loss < loss[active]) | hit
            x_best[active[keep]] = candidate[keep]
            loss[active[keep]] = new_loss[keep]
            fooled[active[hit]] = True
            used[active[hit]] = step + 2  # x(0) was evaluation 1
        return x_best, fooled, used, loss

    # --- random draws ---
    def _draw(self, n: int, side: int, channels: int, height: int, width: int,
              generator: torch.Generator) -> dict[str, Tensor]:
        """One step's random numbers for all n images of the batch (positions inclusive of H - side)."""
        draws = {
            "top": torch.randint(0, height - side + 1, (n,), generator=generator),
            "left": torch.randint(0, width - side + 1, (n,), generator=generator),
            "signs": _signs((n, channels, 1, 1), generator),
        }
        if self.norm == "l2":
            draws["top2"] = torch.randint(0, height - side + 1, (n,), generator=generator)
            draws["left2"] = torch.randint(0, width - side + 1, (n,), generator=generator)
            draws["transpose"] = torch.randint(0, 2, (n,), generator=generator).bool()
        return draws

    # --- x(0) ---
    def _start(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n, channels, height, width = x.shape
        if self.norm == "linf":
            # vertical stripes: one sign per channel and column (Sec. 3.2)
            stripes = _signs((n, channels, 1, width), generator).to(x.device, x.dtype)
            return (x + self.eps * stripes).clamp(0, 1)
        side = min(height, width) // INIT_GRID
        if side < 1:
            raise ValueError(f"{self.name}: the L2 init needs images of at least {INIT_GRID} pixels a side")
        tiles = INIT_GRID * INIT_GRID
        transpose = torch.randint(0, 2, (n, tiles), generator=generator).bool()
        signs = _signs((n, channels, tiles), generator)
        bump = square_bump(side).float()
        shapes = torch.where(transpose[:, :, None, None], bump.T, bump)  # (n, tiles, s, s)
        grid = signs[:, :, :, None, None] * shapes[:, None]  # (n, C, tiles, s, s)
        grid = grid.view(n, channels, INIT_GRID, INIT_GRID, side, side).permute(0, 1, 2, 4, 3, 5)
        top, left = (height - INIT_GRID * side) // 2, (width - INIT_GRID * side) // 2
        delta = torch.zeros(x.shape, dtype=torch.float32)
        delta[:, :, top:top + INIT_GRID * side, left:left + INIT_GRID * side] = grid.reshape(
            n, channels, INIT_GRID * side, INIT_GRID * side)
        return self._on_sphere(x, delta.to(x.device, x.dtype))

    def _on_sphere(self, x: Tensor, delta: Tensor) -> Tensor:
        """x + delta rescaled to ||delta||_2 = eps, clipped to [0, 1]."""
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return (x + delta * _per_sample(self.eps / norm)).clamp(0, 1)

    # --- candidates ---
    def _linf_candidate(self, x: Tensor, x_best: Tensor, side: int, draws: dict[str, Tensor]) -> Tensor:
        _, _, height, width = x.shape
        window = _window_mask(draws["top"], draws["left"], side, height, width)
        signs = draws["signs"].to(x.dtype)
        candidate = torch.where(window, (x + self.eps * signs).clamp(0, 1), x_best)
        # the window already holds these signs: the model's answer is known, so flip them instead
        if not self.flip_unchanged:
            return candidate
        unchanged = (candidate == x_best).flatten(1).all(dim=1)
        if unchanged.any():
            flipped = torch.where(window[unchanged], (x[unchanged] - self.eps * signs[unchanged]).clamp(0, 1),
                                  x_best[unchanged])
            candidate[unchanged] = flipped
        return candidate

    def _l2_candidate(self, x: Tensor, x_best: Tensor, side: int, draws: dict[str, Tensor]) -> Tensor:
        _, channels, height, width = x.shape
        delta = x_best - x
        first = _window_index(draws["top"], draws["left"], side, channels)
        second = _window_index(draws["top2"], draws["left2"], side, channels)
        both = (_window_mask(draws["top"], draws["left"], side, height, width)
                | _window_mask(draws["top2"], draws["left2"], side, height, width))

        def channel_norm(t: Tensor) -> Tensor:  # per image and channel, (n, C, 1, 1)
            return t.square().sum(dim=(-2, -1), keepdim=True).sqrt()

        old = delta[first]
        mass_both = channel_norm(delta * both)
        unused = (self.eps**2 - delta.flatten(1).square().sum(dim=1)).clamp_min(0)
        bump = square_bump(side).to(x.device, x.dtype)
        shape = torch.where(_per_sample(draws["transpose"]), bump.T, bump)  # (n, 1, s, s)
        new = shape * draws["signs"].to(x.dtype) + old / channel_norm(old).clamp_min(1e-12)
        target_norm = (_per_sample(unused) / channels + mass_both.square()).sqrt()
        new = new / channel_norm(new).clamp_min(1e-12) * target_norm
        delta[second] = 0.0  # the second window's mass moves into the first
        delta[first] = new
        return self._on_sphere(x, delta)


# AutoAttack's standard version (Croce & Hein, ICML 2020): Square, 5000 queries, p_init 0.8, one run.
register_preset("square-autoattack", "square", "Croce & Hein (ICML 2020), AutoAttack standard: Square, "
                "5000 queries, p_init 0.8, no restarts", n_queries=5000, p_init=0.8, restarts=1)
