"""APGD (Auto-PGD), in L-inf and L2.

Reference: F. Croce and M. Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020, Sec. 3 and Algorithm 1.

APGD is PGD with momentum whose step size is chosen by the attack itself. With f the
objective to maximise, P the projection onto the eps-ball around x intersected with [0, 1],
and s(g) the steepest-ascent direction of the norm (sign(g) for L-inf, g / ||g||_2 for L2):

    x(1)   = P(x(0) + eta * s(grad f(x(0))))                         (first step: no momentum)
    z(k+1) = P(x(k) + eta * s(grad f(x(k))))
    x(k+1) = P(x(k) + alpha * (z(k+1) - x(k)) + (1 - alpha) * (x(k) - x(k-1)))

The best iterate so far (x_max, f_max) is kept. At each checkpoint w_j the step size is
halved, and the iterate reset to x_max, when either

* condition 1: the fraction of steps since w_{j-1} that increased f,
  #{i in [w_{j-1}, w_j - 1] : f(x(i+1)) > f(x(i))} / (w_j - w_{j-1}), is below rho; or
* condition 2: eta was not halved at w_{j-1} and f_max is the same as at w_{j-1}.

Checkpoints: w_j = ceil(p_j * n_iter) with p_0 = 0, p_1 = 0.22 and
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), for p_j <= 1 (n_iter = 100 gives
0, 22, 41, 57, 70, 80, 87, 93, 99): long phases of exploration first, shorter ones later.

Everything is per sample: each image has its own step size and its own decisions. As in
Algorithm 1, a sample reset to x_max keeps its previous iterate, so the momentum term of the
next step is x_max - x(w_j - 1). The last iterate x(n_iter) is evaluated without a gradient
(no step is taken from it); a checkpoint at w_j = n_iter therefore changes nothing.

Defaults and where they come from:

* ``n_iter = 100``: the paper's iteration budget for APGD, as run inside AutoAttack.
* initial step size eta = 2 * eps: paper, Sec. 3 (not a parameter: APGD is "parameter-free").
* ``alpha = 0.75`` (weight of the new step; 1 - alpha on the previous update): paper, Sec. 3.
* ``rho = 0.75``: paper, Sec. 3.
* p_1 = 0.22, decrement 0.03, minimal phase 0.06: paper, Sec. 3.
* ``restarts = 1``: AutoAttack runs APGD-CE and APGD-DLR once each (paper, AutoAttack section;
  the random restarts of its experiments are extra). With more restarts, later
  runs attack only the samples still standing; per sample the first success is kept, else the
  run with the highest objective.
* ``random_start = True``: Algorithm 1 takes the start x(0) as an input; the authors' release
  (AutoAttack) starts from a random point of the eps-ball, which we follow. Here the start is
  uniform in the L-inf box, or uniform in the L2 ball.

Reporting (the repository's contract, not the paper's): every iterate's success is read from
the logits the gradient step already computed, so each sample returns the *first* iterate that
fooled the model if there is one (the highest-objective iterate need not fool it), else the
iterate with the highest objective. ``queries`` counts model
evaluations: x(0) is evaluation 1, x(k) evaluation k + 1, so an unfooled sample used
n_iter + 1 per run (each evaluation is ``eot`` forward passes: (n_iter + 1) * eot with EOT).

L2 projection: radial shrinking onto the ball followed by clipping to [0, 1]. Clipping never
lengthens the perturbation (x is itself in [0, 1]), so the result is feasible, though not the
exact Euclidean projection onto the intersection (the paper's Algorithm 1 leaves P abstract).

Registered names:

* ``apgd``: generic, any objective (``adaptive`` included), L-inf or L2 (``norm`` argument);
* ``apgd-ce``: objective fixed to cross-entropy (paper's APGD-CE);
* ``apgd-dlr``: objective fixed to DLR (paper's APGD-DLR; with ``targeted=True`` the targeted
  DLR of ``objectives.py``).

``norm`` is a class attribute in the attack contract; APGD covers both norms with one class, so
it sets ``self.norm`` per instance (the base class reads ``self.norm``). The class attribute
says "linf", the default.

``eot`` (Expectation over Transformation, Athalye et al. 2018; ``robustloss.attacks.eot``): a
randomised model (``robustloss.defenses``) draws new randomness on every forward pass, so one pass's
gradient follows that draw's noise. With ``eot > 1`` every evaluation of an iterate averages ``eot``
forward/backward passes: the step direction is the averaged input gradient, the objective value that
drives the step-size schedule and the best iterate x_max is the mean of the passes' objective values
(the quantity whose gradient is that average), and success (the first fooling iterate) is judged on the
averaged class probabilities (log-mean-softmax), not on one lucky draw. ``queries`` count every pass
(eot per evaluation). ``eot = 1`` is exactly the plain attack; on a deterministic model larger ``eot``
only costs time.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from robustloss.attacks.base import Attack
from robustloss.attacks.eot import check_eot, eot_gradient, eot_hyperparameter, mean_logits
from robustloss.attacks.objectives import Objective
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS

NORMS = ("linf", "l2")


def checkpoints(n_iter: int) -> list[int]:
    """The iterations w_j = ceil(p_j * n_iter) at which APGD may halve its step (w_0 = 0 included).

    The p_j are kept in hundredths as integers: in floating point 0.41 * 100 is 41.000000000000007,
    whose ceiling would be 42.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    previous, current = 0, 22  # p_0 = 0, p_1 = 0.22
    points = {0}
    while current <= 100:  # p_j <= 1
        points.add(-(-current * n_iter // 100))  # integer ceil(current / 100 * n_iter)
        previous, current = current, current + max(current - previous - 3, 6)
    return sorted(points)


def _per_sample(t: Tensor) -> Tensor:
    """Reshape a (N,) tensor to broadcast over (N, C, H, W)."""
    return t.view(-1, 1, 1, 1)


@ATTACKS.register("apgd")
class APGD(Attack):
    """Auto-PGD (Croce & Hein, ICML 2020) with any objective (``adaptive`` included); see the module docstring."""

    name = "apgd"
    norm = "linf"  # default; instances set self.norm to their ``norm`` argument

    def __init__(
        self,
        *,
        eps: float,
        norm: str = "linf",
        n_iter: int = 100,
        restarts: int = 1,
        random_start: bool = True,
        alpha: float = 0.75,
        rho: float = 0.75,
        targeted: bool = False,
        objective: str = "ce",
        eot: int = 1,
    ):
        if eps is None:
            raise ValueError(f"{self.name}: eps is required (APGD is a fixed-budget attack)")
        super().__init__(eps=eps, targeted=targeted, objective=objective)
        if norm not in NORMS:
            raise ValueError(f"{self.name}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if int(n_iter) != n_iter or n_iter < 1:
            raise ValueError(f"{self.name}: n_iter must be an integer >= 1, got {n_iter}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"{self.name}: restarts must be an integer >= 1, got {restarts}")
        if restarts > 1 and not random_start:
            raise ValueError(f"{self.name}: restarts > 1 needs random_start=True (restarts would be identical)")
        if not 0 < alpha <= 1:
            raise ValueError(f"{self.name}: alpha must be in (0, 1] (1 = no momentum), got {alpha}")
        if not 0 < rho <= 1:
            raise ValueError(f"{self.name}: rho must be in (0, 1], got {rho}")
        self.norm = norm  # instance attribute: overrides the class default, read by the base's budget check
        self.n_iter, self.restarts = int(n_iter), int(restarts)
        self.random_start, self.alpha, self.rho = bool(random_start), float(alpha), float(rho)
        self.eot = check_eot(self.name, eot)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "norm": self.norm, "n_iter": self.n_iter, "restarts": self.restarts,
            "random_start": self.random_start, "alpha": self.alpha, "rho": self.rho,
        } | eot_hyperparameter(self.eot)

    # --- norm-specific geometry ---
    def _start(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if not self.random_start:
            return x.clone()
        # drawn on the CPU so a seed gives the same start on every device
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=generator).to(x.device, x.dtype)
            return (x + (2 * u - 1) * self.eps).clamp(0, 1)
        # uniform in the L2 ball: a Gaussian direction and radius eps * u^(1/d)
        direction = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        direction = direction / _per_sample(direction.flatten(1).norm(dim=1).clamp_min(1e-12))
        u = torch.rand((len(x),), generator=generator).to(x.device, x.dtype)
        radius = self.eps * u.pow(1.0 / x[0].numel())
        return (x + direction * _per_sample(radius)).clamp(0, 1)

    def _direction(self, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / _per_sample(grad.flatten(1).norm(dim=1).clamp_min(1e-12))

    def _project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        if self.norm == "linf":
            return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)
        delta = x_adv - x
        shrink = (self.eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp_max(1.0)
        return (x + delta * _per_sample(shrink)).clamp(0, 1)

    # --- the attack ---
    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        result = x.clone()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_gain = torch.full((len(x),), float("-inf"), device=x.device)
        queries = torch.zeros(len(x), dtype=torch.int64, device=x.device)
        for _ in range(self.restarts):
            standing = (~found).nonzero().squeeze(1)  # later restarts only attack samples not yet fooled
            if len(standing) == 0:
                break
            x_run, hit, used, gain = self._single_run(
                model, x[standing], y[standing], goal[standing], objective, generator)
            queries[standing] += used
            # a success always wins; otherwise keep the run that reached the higher objective
            better = hit | (gain > best_gain[standing])
            result[standing[better]] = x_run[better]
            best_gain[standing] = torch.maximum(best_gain[standing], gain)
            found[standing] = hit
        return result, queries

    def _evaluate(self, model, x_adv, y, goal, objective, need_grad: bool):
        """(objective per sample, its input gradient or None, fooled?) at x_adv: one model evaluation
        of ``eot`` passes. The objective and the gradient are the means over the passes; success is
        judged on the averaged probabilities (log-mean-softmax). eot = 1: the single pass's own values."""
        gains = []

        def gain_of(logits: Tensor) -> Tensor:
            gain = objective(logits, goal, self.targeted)
            gains.append(gain.detach().float())
            return gain

        if need_grad:
            logits, grad = eot_gradient(model, x_adv, gain_of, self.eot)
        else:
            with torch.no_grad():
                passes = [model(x_adv.detach()) for _ in range(self.eot)]
            for logits in passes:
                gain_of(logits)
            logits, grad = mean_logits(passes), None
        gain = gains[0]
        if len(gains) > 1:
            # anchored at the first pass, so identical passes (a deterministic model) average to exactly
            # the single-pass value and the step-size decisions stay those of eot = 1
            gain = gain + torch.stack([g - gains[0] for g in gains[1:]]).sum(dim=0) / len(gains)
        return gain, grad, self.is_success(logits.detach(), y, goal)

    # Long on purpose: Croce & Hein's Algorithm 1 (momentum step, checkpoints, step halving) kept as one
    # loop so it can be checked line by line against the paper and auto-attack's reference.
    def _single_run(self, model, x, y, goal, objective, generator, aimed: Tensor | None = None):
        """One APGD run: (returned images, fooled?, evaluations used, best objective). ``aimed``: per-sample
        target classes passed to ``objective`` as ``target=`` (APGD-T's targeted DLR), kept row by row.

        Active set: a fooled sample's returned image is fixed (its first fooling iterate), so it leaves
        the batch and later iterations compute only on the samples still standing. All of APGD's state
        is per sample (step size, best point, momentum, checkpoint counters; the start is drawn for the
        whole batch first), so a sample's iterates do not depend on which batch-mates remain."""
        n = len(x)
        schedule = set(checkpoints(self.n_iter)[1:])
        x_cur = self._start(x, generator)
        run_objective = objective if aimed is None else partial(objective, target=aimed)
        gain, grad, fooled = self._evaluate(model, x_cur, y, goal, run_objective, need_grad=True)
        # full-size results, written when a sample is fooled or at the end
        best_x, best_gain, first = x_cur.clone(), gain.clone(), x_cur.clone()
        found = fooled.clone()
        used = torch.where(fooled, 1, self.n_iter + 1).to(torch.int64) * self.eot  # every pass counts
        # the per-sample state of the samples in the batch (rows: their rows in x)
        state = {
            "rows": torch.arange(n, device=x.device), "x": x, "y": y, "goal": goal, "x_cur": x_cur,
            "x_prev": x_cur, "grad": grad, "gain": gain, "prev_gain": gain, "best_x": x_cur.clone(),
            "best_gain": gain.clone(), "best_grad": grad.clone(),
            "step": torch.full((n,), 2 * self.eps, dtype=x.dtype, device=x.device),  # eta(0) = 2 eps
            # step-size bookkeeping since the last checkpoint
            "increases": torch.zeros(n, dtype=torch.int64, device=x.device), "best_at_last": gain.clone(),
            "halved_at_last": torch.zeros(n, dtype=torch.bool, device=x.device),
        }
        if aimed is not None:
            state["aimed"] = aimed
        live = ~fooled
        last_checkpoint = 0
        for k in range(1, self.n_iter + 1):
            if self.active_set and not live.all():
                state = {key: value[live] for key, value in state.items()}
                live = live[live]
                if aimed is not None:
                    run_objective = partial(objective, target=state["aimed"])
            if not live.any():
                break
            s = state
            z = self._project(s["x_cur"] + _per_sample(s["step"]) * self._direction(s["grad"]), s["x"])
            if k == 1:
                x_next = z  # Algorithm 1: the first step has no previous update to carry on
            else:
                x_next = self._project(s["x_cur"] + self.alpha * (z - s["x_cur"])
                                       + (1 - self.alpha) * (s["x_cur"] - s["x_prev"]), s["x"])
            s["x_prev"], s["x_cur"] = s["x_cur"], x_next
            # the last iterate needs no gradient: no step is taken from it
            gain, grad, fooled = self._evaluate(model, x_next, s["y"], s["goal"], run_objective,
                                                need_grad=k < self.n_iter)
            s["increases"] += (gain > s["prev_gain"]).long()
            s["prev_gain"] = gain
            improved = gain > s["best_gain"]
            s["best_x"][improved] = x_next[improved]
            s["best_gain"] = torch.where(improved, gain, s["best_gain"])
            if grad is not None:
                s["best_grad"][improved] = grad[improved]
                s["grad"] = grad
            newly = fooled & live
            rows = s["rows"][newly]
            first[rows], used[rows], found[rows] = x_next[newly], (k + 1) * self.eot, True
            best_gain[rows] = s["best_gain"][newly]
            live = live & ~newly

            if k in schedule and k < self.n_iter:
                self._checkpoint(s, k - last_checkpoint)
                last_checkpoint = k

        best_x[state["rows"]], best_gain[state["rows"]] = state["best_x"], state["best_gain"]
        returned = torch.where(_per_sample(found), first, best_x)
        return returned, found, used, best_gain

    def _checkpoint(self, s: dict[str, Tensor], since_last: int) -> None:
        """Algorithm 1's checkpoint: halve the step of the samples that made few increases or stalled,
        and restart them from their best point (with its gradient); the momentum term then points
        from the previous iterate to x_max, as in the paper."""
        few_increases = s["increases"] < self.rho * since_last  # condition 1
        stalled = ~s["halved_at_last"] & (s["best_gain"] <= s["best_at_last"])  # condition 2
        halve = few_increases | stalled
        s["step"] = torch.where(halve, s["step"] / 2, s["step"])
        s["x_cur"] = torch.where(_per_sample(halve), s["best_x"], s["x_cur"])
        s["grad"] = torch.where(_per_sample(halve), s["best_grad"], s["grad"])
        s["prev_gain"] = torch.where(halve, s["best_gain"], s["prev_gain"])
        s["halved_at_last"], s["best_at_last"] = halve, s["best_gain"].clone()
        s["increases"] = torch.zeros_like(s["increases"])


class _FixedObjectiveAPGD(APGD):
    """APGD whose objective is part of its name. ``objective`` is accepted only with that value, so
    ``create_attack(name, **attack.hyperparameters())`` rebuilds the attack."""

    fixed_objective = ""

    def __init__(self, *, eps: float, norm: str = "linf", n_iter: int = 100, restarts: int = 1,
                 random_start: bool = True, alpha: float = 0.75, rho: float = 0.75, targeted: bool = False,
                 objective: str | None = None, eot: int = 1):
        if objective not in (None, self.fixed_objective):
            raise ValueError(f"{self.name} always uses the {self.fixed_objective!r} objective; "
                             f"use 'apgd' with objective={objective!r} instead")
        super().__init__(eps=eps, norm=norm, n_iter=n_iter, restarts=restarts, random_start=random_start,
                         alpha=alpha, rho=rho, targeted=targeted, objective=self.fixed_objective, eot=eot)


@ATTACKS.register("apgd-ce")
class APGDCE(_FixedObjectiveAPGD):
    """APGD on the cross-entropy (the paper's APGD-CE)."""

    name = "apgd-ce"
    fixed_objective = "ce"


@ATTACKS.register("apgd-dlr")
class APGDDLR(_FixedObjectiveAPGD):
    """APGD on the difference of logits ratio (the paper's APGD-DLR; targeted form in objectives.py)."""

    name = "apgd-dlr"
    fixed_objective = "dlr"


# AutoAttack as published (Croce & Hein, ICML 2020): APGD-CE and APGD-DLR, 100 iterations, one run each.
register_preset("apgd-ce-autoattack", "apgd-ce", "Croce & Hein (ICML 2020), AutoAttack: APGD-CE, "
                "100 iterations, no restarts", n_iter=100, restarts=1)
register_preset("apgd-dlr-autoattack", "apgd-dlr", "Croce & Hein (ICML 2020), AutoAttack: APGD-DLR, "
                "100 iterations, no restarts", n_iter=100, restarts=1)
