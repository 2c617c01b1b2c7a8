"""FAB, the Fast Adaptive Boundary attack, in L-inf and L2 (``fab``, ``fab-t``).

Reference: F. Croce and M. Hein, "Minimally distorted adversarial examples with a fast adaptive
boundary attack", ICML 2020, Sec. 3 and Algorithm 1. The targeted version FAB-T is the one of
AutoAttack (F. Croce and M. Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020) as its released code runs it.

FAB is a minimum-norm attack: it looks for the adversarial example closest to the clean image x_o
in the norm p (inf or 2; q is the dual norm, 1 or 2), by stepping to linearised decision boundaries.
With Z the logits and y the true class, one iteration at the current point x(i):

    f_s = Z_s(x(i)) - Z_y(x(i)),  g_s = grad_x f_s(x(i))       every class s != y
    s*  = argmin_{s != y} |f_s| / ||g_s||_q                    the closest linearised boundary
    pi  = {z : f_s* + <g_s*, z - x(i)> = 0}                    its hyperplane
    d   = P_p(x(i), pi),  d_o = P_p(x_o, pi)                   smallest steps onto pi inside [0, 1]^d
    alpha  = min(||d||_p / (||d||_p + ||d_o||_p), alpha_max)
    x(i+1) = clip_[0,1]((1 - alpha) (x(i) + eta d) + alpha (x_o + eta d_o))
    if x(i+1) is misclassified: keep it if it is the closest adversarial example so far, then
           x(i+1) = x_o + beta (x(i+1) - x_o)                  the backward step towards x_o

The biased step mixes the projection of the current point (which follows the boundary) with the
projection of x_o (which pulls the iterate towards the clean image); alpha grows with how far the
current point still is from the boundary relative to x_o, capped at alpha_max. eta > 1
extrapolates slightly past the linearised boundary so that the iterate actually crosses the true
one; the backward step beta < 1 then restarts the search from a point closer to x_o. A run keeps
the misclassified iterate with the smallest p-distance to x_o.

P_p, the projection onto the hyperplane intersected with the box: find the smallest step d with
<g, d> = c (the value that puts the point on pi) and 0 <= point + d <= 1. Flip the sign of g and c
so that c >= 0, and let m_i be the room coordinate i has in the direction that raises <g, d>
(1 - point_i where g_i > 0, point_i where g_i < 0). Then

    L-inf: d_i = sign(g_i) min(r, m_i),  r the smallest radius with sum_i |g_i| min(r, m_i) = c
    L2:    d_i = g_i min(l, m_i / |g_i|), l the smallest with sum_i g_i^2 min(l, m_i / |g_i|) = c

(L2: the optimality conditions of min ||d||_2 subject to <g, d> = c and the box give d = the box
clip of l g; L-inf: within radius r the largest reachable <g, d> is sum |g_i| min(r, m_i)). Both are
sums of w_i min(r, b_i), continuous, nondecreasing and linear between the sorted b_i: sorting the
b_i and two cumulative sums give the sum at every breakpoint, the first breakpoint where it reaches c
fixes the segment, and the segment is solved exactly. O(d log d) per sample, vectorised over the
batch, in float64 (the sums run over every pixel). If no point of the box reaches the hyperplane the
step goes to the box corner that brings the linearisation closest to it (d_i = sign(g_i) m_i).

Linearisation: one forward pass and the input gradients of all the logit differences Z_s - Z_y
at once (``torch.autograd.grad`` with batched grad_outputs: autograd vectorises the per-class
backward passes instead of looping over classes). FAB-T needs one difference, one backward.
The Jacobian holds classes x batch x pixels floats. ``precision="bf16"`` runs these linearisations
under autocast (the projections always run in float64 on float32 gradients), but the forward passes
that judge the iterates, and the clean one, run in float32: they are verdicts that pick the returned
example, and a bf16 verdict would favour exactly the borderline iterates that fail the final float32
check (measured: L-inf success on 16 digits fell from 69% to 38% with bf16 judgements).

``fab-t``: for target rank k = 2, ..., n_target_classes + 1 the target of each sample is the class
with its k-th largest clean logit; one FAB run (restarts runs with restarts > 1) then linearises only
f_t = Z_t - Z_y, i.e. steps to the boundary between y and t. Success is still *misclassification*
(pred != y), as in AutoAttack. n_target_classes is capped at classes - 1 (there are no more
targets). In the attack contract both names are untargeted: ``targeted=True`` is refused (FAB-T
picks its own targets).

Defaults and where they come from:

* ``n_iter = 100``: AutoAttack's FAB and FAB-T (standard version).
* ``alpha_max = 0.1``, ``eta = 1.05``, ``beta = 0.9``: the FAB paper's values (used for all its
  experiments) and AutoAttack's defaults.
* ``restarts = 1``: AutoAttack's standard version runs FAB-T once per target; its "plus" version
  runs untargeted FAB with 5 restarts (preset ``fab-autoattack-plus``).
* ``n_target_classes = 9``: AutoAttack's FAB-T (all other classes of a 10-class problem).

Runs and restarts. The first run of each target (and of ``fab``) starts at x_o; restart r > 0
starts at x_o plus a random point of the sphere of radius min(u, eps) / 2 in the attack's norm,
clipped to [0, 1] (L-inf: a uniform draw in the cube rescaled to that radius; L2: a Gaussian
direction), where u is the distance of the closest adversarial example found so far for that
sample (inf if none). The paper scales its restarts by the distance already achieved; AutoAttack's
code uses eps / 2 (each of its runs starts with nothing found, so min(u, eps) = eps there, as it is
here for a sample still standing in a bounded attack). With eps=None and nothing found yet there is
no scale to draw from, so such a sample restarts from x_o itself, which repeats its first run (FAB
is deterministic from a given start); we do not invent a radius. Random draws come only from
``generator``, on the CPU.

``eps``: None runs unbounded: every run (restart, target) attacks every correctly classified
sample and the closest adversarial example over all of them is returned (read
``AttackResult.linf`` / ``.l2``; it counts at every budget of the worst case). With a number, as in
AutoAttack, later runs attack only samples without an adversarial example within eps, and a sample
whose closest adversarial example lies beyond eps comes back as the clean x_o (not fooled). FAB's
iterations themselves never look at eps: a bounded run follows the unbounded trajectory, so the
robust accuracy at eps is exactly the share of samples whose unbounded distance exceeds eps (with
restarts = 1, where nothing is random).

Samples misclassified from the start are returned unchanged (fooled at distance 0) and not
attacked. ``objective`` is not used: FAB linearises the logits themselves, and the differences
Z_s - Z_y it drives to zero are C&W's logit margin, so results report ``cw``; the argument accepts
``cw`` and ``adaptive`` only so that an evaluation plan can pass one uniformly.

``queries`` counts model evaluations, one evaluation being a forward pass at one point; the input
gradients of a linearisation ride on its forward pass and are not counted separately (they cost one
backward pass per class for ``fab``, one for ``fab-t``). The clean forward pass is evaluation 1; each
iteration then costs 2, the linearisation at x(i) and the forward pass that judges x(i+1) (as in
AutoAttack's code: judging first, then linearising the point after the backward step, is cheaper
than linearising every new iterate and linearising again after a backward step). A fooled sample
reports the count at which its returned example was judged, 1 + 2 * (iterations of all runs on it
until then); an unfooled one the total, 1 + 2 * n_iter * (runs on it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.attacks.base import Attack
from robustloss.attacks.objectives import Objective
from robustloss.precision import full_precision
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS

NORMS = ("linf", "l2")
# Guards divisions by gradient norms and segment slopes that vanish (dead ReLUs, flat logits).
_TINY = 1e-12


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a (N,) tensor to broadcast over ``like`` (N, ...)."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def distance(delta: Tensor, norm: str) -> Tensor:
    """Per-sample size of ``delta`` (N, ...) in ``norm``; the same formulas as ``AttackResult``."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _capped_level(weights: Tensor, caps: Tensor, value: Tensor) -> Tensor:
    """Per row, the smallest r >= 0 with sum_i weights_i * min(r, caps_i) = value (all >= 0), or inf
    where even r = inf falls short. The sum is piecewise linear in r with breakpoints at the caps."""
    caps, order = caps.sort(dim=1)
    weights = weights.gather(1, order)
    total = weights.sum(dim=1, keepdim=True)
    reached = (weights * caps).cumsum(dim=1)  # sum over the caps r has passed, at each breakpoint
    slope = (total - weights.cumsum(dim=1)).clamp_min(0)  # weight of the caps not yet passed
    at_caps = reached + caps * slope  # the sum at r = caps[:, j]
    segment = (at_caps < value[:, None]).sum(dim=1, keepdim=True)  # r lies in (caps[j-1], caps[j]]
    reached = torch.cat([torch.zeros_like(total), reached], dim=1).gather(1, segment).squeeze(1)
    slope = torch.cat([total, slope], dim=1).gather(1, segment).squeeze(1)
    level = (value - reached) / slope.clamp_min(_TINY)
    return torch.where(segment.squeeze(1) < caps.shape[1], level, math.inf)


def project_to_hyperplane(points: Tensor, grad: Tensor, value: Tensor, norm: str) -> Tensor:
    """Per row, the step d of smallest ``norm`` with <grad, d> = value and points + d in [0, 1]
    (rows flattened: (N, d)). Where the box cannot reach the hyperplane, the step to the box corner
    that maximises <grad, d> * sign(value). See the module docstring for the derivation."""
    t, g, c = points.double(), grad.double(), value.double()
    flip = torch.where(c < 0, -1.0, 1.0).to(g)
    g, c = g * flip[:, None], c * flip  # now c >= 0; <g, d> = c is the same constraint
    room = torch.where(g > 0, 1 - t, t)  # how far each pixel can move in the direction raising <g, d>
    size = g.abs()
    if norm == "linf":
        r = _capped_level(size, room, c)
        step = g.sign() * torch.minimum(r[:, None], room)
    else:
        caps = torch.where(size > 0, room / size.clamp_min(1e-300), 0.0)  # no step along a zero gradient
        r = _capped_level(size * size, caps, c)
        step = g * torch.minimum(r[:, None], caps)
    return step.to(points.dtype)


@ATTACKS.register("fab")
class FAB(Attack):
    """FAB (Croce & Hein, ICML 2020), untargeted, minimum-norm; see the module docstring."""

    name = "fab"
    norm = "linf"  # default; instances set self.norm to their ``norm`` argument

    def __init__(
        self,
        *,
        eps: float | None = None,
        norm: str = "linf",
        n_iter: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        targeted: bool = False,
        objective: str = "cw",
    ):
        if targeted:
            raise ValueError(f"{self.name}: targeted=True is not supported; FAB is untargeted and FAB-T "
                             f"('fab-t') picks its own targets (the classes with the largest clean logits)")
        if objective not in ("cw", "adaptive"):
            raise ValueError(f"{self.name} linearises the logits and takes no loss; objective must be 'cw' or "
                             f"'adaptive', got {objective!r}")
        super().__init__(eps=eps, targeted=False, objective="cw")
        if norm not in NORMS:
            raise ValueError(f"{self.name}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if int(n_iter) != n_iter or n_iter < 1:
            raise ValueError(f"{self.name}: n_iter must be an integer >= 1, got {n_iter}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"{self.name}: restarts must be an integer >= 1, got {restarts}")
        if not 0 <= alpha_max <= 1:
            raise ValueError(f"{self.name}: alpha_max must be in [0, 1], got {alpha_max}")
        if not (eta > 0 and math.isfinite(eta)):
            raise ValueError(f"{self.name}: eta must be a finite number > 0, got {eta}")
        if not 0 < beta <= 1:
            raise ValueError(f"{self.name}: beta must be in (0, 1], got {beta}")
        self.norm = norm  # instance attribute: overrides the class default, read by the base's budget check
        self.n_iter, self.restarts = int(n_iter), int(restarts)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "norm": self.norm, "n_iter": self.n_iter, "restarts": self.restarts,
            "alpha_max": self.alpha_max, "eta": self.eta, "beta": self.beta,
        }

    def _schedule(self, classes: int) -> list[tuple[int | None, int]]:
        """(target rank or None for untargeted, restart index) of every run, in order."""
        return [(None, restart) for restart in range(self.restarts)]

    # --- the attack ---
    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        with torch.no_grad(), full_precision(x.device):  # a verdict (see the module docstring)
            clean = model(x).float()
        correct = clean.argmax(dim=1) == y
        used = torch.ones(len(x), dtype=torch.int64, device=x.device)  # the clean forward pass
        best = x.clone()
        best_dist = torch.where(correct, math.inf, 0.0).to(x.device)  # misclassified: fooled at distance 0
        found_at = used.clone()
        for rank, restart in self._schedule(clean.shape[1]):
            standing = correct.clone()
            if self.eps is not None:  # bounded: later runs only attack samples not yet fooled within eps
                standing &= ~(best_dist <= self.eps)
            rows = standing.nonzero().squeeze(1)
            if len(rows) == 0:
                break
            target = None if rank is None else clean[rows].topk(rank, dim=1).indices[:, -1]
            start = x[rows] if restart == 0 else self._random_start(x[rows], best_dist[rows], generator)
            run_used = used[rows]
            run_best, run_dist, run_found = self._single_run(model, x[rows], y[rows], target, start, run_used)
            used[rows] = run_used
            closer = run_dist < best_dist[rows]
            best[rows[closer]] = run_best[closer]
            best_dist[rows[closer]] = run_dist[closer]
            found_at[rows[closer]] = run_found[closer]
        limit = math.inf if self.eps is None else self.eps
        found = torch.isfinite(best_dist) & (best_dist <= limit)
        # beyond the budget (or never fooled): the clean image, which the final check reports as not fooled
        return torch.where(_per_sample(found, x), best, x), torch.where(found, found_at, used)

    def _random_start(self, x: Tensor, best_dist: Tensor, generator: torch.Generator | None) -> Tensor:
        """x plus a random point at distance min(u, eps) / 2 (u: the best distance so far), clipped to
        [0, 1]; x itself where that radius is infinite (eps=None and nothing found yet)."""
        # drawn on the CPU so a seed gives the same start on every device
        if self.norm == "linf":
            draw = 2 * torch.rand(x.shape, generator=generator) - 1
            direction = draw / _per_sample(draw.flatten(1).abs().amax(dim=1).clamp_min(_TINY), draw)
        else:
            draw = torch.randn(x.shape, generator=generator)
            direction = draw / _per_sample(draw.flatten(1).norm(dim=1).clamp_min(_TINY), draw)
        radius = best_dist.clamp_max(math.inf if self.eps is None else self.eps) / 2
        scale = torch.where(torch.isfinite(radius), radius, 0.0)
        return (x + direction.to(x.device, x.dtype) * _per_sample(scale, x)).clamp(0, 1)

    def _single_run(
        self, model: nn.Module, x0: Tensor, y: Tensor, target: Tensor | None, start: Tensor, used: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One FAB run from ``start``: (closest adversarial image, its distance (inf: none), the
        evaluation count when it was judged). ``used`` (evaluations per sample) is advanced in place."""
        best = x0.clone()
        best_dist = torch.full((len(x0),), math.inf, device=x0.device)
        found_at = used.clone()
        x_cur = start
        for _ in range(self.n_iter):
            f, g = self._linearise(model, x_cur, y, target)
            x_cur = self._step(x0, x_cur, f, g, y if target is None else None)
            with torch.no_grad(), full_precision(x0.device):  # a verdict: float32 even under bf16
                fooled = model(x_cur).argmax(dim=1) != y
            used += 2  # the linearisation and the judgement of the new iterate
            dist = distance(x_cur - x0, self.norm)
            closer = fooled & (dist < best_dist)
            best[closer] = x_cur[closer]
            best_dist = torch.where(closer, dist, best_dist)
            found_at = torch.where(closer, used, found_at)
            # backward step towards x0 from every adversarial iterate (a convex combination: stays in the box)
            x_cur = torch.where(_per_sample(fooled, x0), x0 + self.beta * (x_cur - x0), x_cur)
        return best, best_dist, found_at

    def _linearise(self, model: nn.Module, point: Tensor, y: Tensor,
                   target: Tensor | None) -> tuple[Tensor, Tensor]:
        """(f, g) at ``point``: f (N, m) the logit differences Z_s - Z_y towards the candidate
        classes (all classes, or the target only: m = 1) and g (N, m, d) their input gradients."""
        point = point.detach().requires_grad_(True)
        logits = model(point)
        own = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        if target is None:
            picks = torch.eye(logits.shape[1], dtype=logits.dtype, device=logits.device)[:, None, :] - own
        else:
            picks = (F.one_hot(target, logits.shape[1]).to(logits.dtype) - own)[None]
        # row s of ``picks`` selects Z_s - Z_y in every sample; one vectorised backward gives all rows
        (grads,) = torch.autograd.grad(logits, point, grad_outputs=picks, is_grads_batched=True)
        f = (logits.detach().float()[None] * picks.float()).sum(dim=2)
        return f.t(), grads.flatten(2).transpose(0, 1).float()

    def _step(self, x0: Tensor, x_cur: Tensor, f: Tensor, g: Tensor, y: Tensor | None) -> Tensor:
        """The biased step of Sec. 3 to the closest linearised boundary (``y`` given: untargeted, whose
        own class is not a candidate)."""
        dual = g.abs().sum(dim=2) if self.norm == "linf" else g.norm(dim=2)
        gap = f.abs() / (dual + _TINY)  # distance to each linearised boundary, in the attack's norm
        if y is not None:
            gap = gap.scatter(1, y[:, None], math.inf)
        rows = torch.arange(len(f), device=f.device)
        chosen = gap.argmin(dim=1)
        f_s, g_s = f[rows, chosen], g[rows, chosen]
        here, origin = x_cur.flatten(1).float(), x0.flatten(1).float()
        # the hyperplane f_s + <g_s, z - x_cur> = 0, reached from x_cur and from x0 (one batched call)
        value = torch.cat([-f_s, -f_s - (g_s * (origin - here)).sum(dim=1)])
        steps = project_to_hyperplane(torch.cat([here, origin]), torch.cat([g_s, g_s]), value, self.norm)
        d_cur, d_orig = steps[: len(f)], steps[len(f):]
        size_cur, size_orig = distance(d_cur, self.norm), distance(d_orig, self.norm)
        alpha = (size_cur / (size_cur + size_orig).clamp_min(_TINY)).clamp_max(self.alpha_max)[:, None]
        moved = (1 - alpha) * (here + self.eta * d_cur) + alpha * (origin + self.eta * d_orig)
        return moved.clamp(0, 1).view_as(x0).to(x0.dtype)


@ATTACKS.register("fab-t")
class FABTargeted(FAB):
    """FAB-T as AutoAttack runs it: one FAB run per target, the classes with the 2nd, 3rd, ... largest
    clean logits; success is misclassification. See the module docstring."""

    name = "fab-t"

    def __init__(
        self,
        *,
        eps: float | None = None,
        norm: str = "linf",
        n_iter: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        n_target_classes: int = 9,
        targeted: bool = False,
        objective: str = "cw",
    ):
        super().__init__(eps=eps, norm=norm, n_iter=n_iter, restarts=restarts, alpha_max=alpha_max, eta=eta,
                         beta=beta, targeted=targeted, objective=objective)
        if int(n_target_classes) != n_target_classes or n_target_classes < 1:
            raise ValueError(f"{self.name}: n_target_classes must be an integer >= 1, got {n_target_classes}")
        self.n_target_classes = int(n_target_classes)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {"n_target_classes": self.n_target_classes}

    def _schedule(self, classes: int) -> list[tuple[int | None, int]]:
        last_rank = min(self.n_target_classes, classes - 1) + 1  # rank 1 is the true class itself
        return [(rank, restart) for rank in range(2, last_rank + 1) for restart in range(self.restarts)]


# AutoAttack (Croce & Hein, ICML 2020): the standard version runs FAB-T with 100 iterations, one run per
# target, 9 targets; the "plus" version adds untargeted FAB with 5 restarts.
register_preset("fab-t-autoattack", "fab-t", "Croce & Hein (ICML 2020), AutoAttack standard: FAB-T, "
                "100 iterations, 9 target classes, one run each", n_iter=100, restarts=1, n_target_classes=9)
register_preset("fab-autoattack-plus", "fab", "Croce & Hein (ICML 2020), AutoAttack plus: FAB, "
                "100 iterations, 5 restarts", n_iter=100, restarts=5)
