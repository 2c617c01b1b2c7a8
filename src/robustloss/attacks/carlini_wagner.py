"""The Carlini & Wagner L2 attack (``cw``).

Carlini & Wagner, "Towards evaluating the robustness of neural networks", IEEE S&P 2017:
the L2 attack of Sec. VI-A, built from Sec. V's choices. A minimum-norm attack: it looks for
the smallest L2 perturbation that fools the model, by solving, for a constant c > 0,

    x_adv(w) = (tanh(w) + 1) / 2                   change of variables (Sec. V, "box
                                                   constraints"): always in [0, 1]
    minimise_w  ||x_adv(w) - x||_2^2 + c * f(x_adv(w))          (Adam on w)

    f(x') = max(Z_y - max_{j != y} Z_j, -kappa)    untargeted (the authors' released code)
    f(x') = max(max_{j != t} Z_j - Z_t, -kappa)    targeted   (the paper's f_6)

on the model's logits Z, and a per-sample binary search over c: a success at c makes c an
upper bound (try the midpoint next); a failure makes it a lower bound (try the midpoint, or
10 c while no upper bound is known yet). Every search step restarts from w = atanh(2x - 1)
with a fresh Adam state, as in the authors' code.

Over all search steps and iterations each sample keeps the successful iterate with the
smallest L2 distance to x ("successful" means the logit margin reaches kappa, so confidence
> 0 asks for margins of at least kappa). A sample that never succeeds is returned as the
clean x, so the base class's final check reports it as not fooled; one that is fooled as it
is (misclassified, or already classified as the target) is returned as x at distance 0.

Pixels at exactly 0 or 1 (most of an MNIST digit's background) start deep in tanh's
saturation, w = atanh(+-0.999999) = +-7.25, so Adam needs many steps to move them; this is
the authors' formulation and one reason why the number of iterations and the learning rate
matter so much for C&W.

``eps``: None runs the unbounded minimum-norm attack (read ``AttackResult.l2``). With a
number, only successful iterates with ||x_adv - x||_2 <= eps are kept (the best one within the
budget) and samples with none come back as x. The binary search itself still follows plain
success, so it keeps shrinking the distortion towards the budget.

The ``objective`` argument is not used to build the loss: C&W always uses its logit margin f on
the model's logits, and results report the objective as ``cw``. For MMC models, whose logits
are -||z - mu_k||^2, the margin is exactly twice the MMC paper's adaptive C&W objective
L_Ada^un,2 = L_MMC(z, y~) - L_MMC(z, y) (Appendix B.4, L_MMC = 1/2 ||z - mu||^2); the paper's
targeted form L_Ada^tar,2 subtracts the true class y where f subtracts the largest non-target
logit. ``objective`` therefore accepts only ``cw`` and ``adaptive`` (which mean the same here).

Defaults and their sources:
* ``binary_search_steps`` = 9, ``initial_const`` = 0.01: the MMC paper (Pang et al. 2020,
  Sec. 4.2, "following the suggestion in Carlini & Wagner"). 9 is also the authors' released
  code's default (their initial constant there is 1e-3).
* ``steps`` = 100, ``lr`` = 0.001, ``confidence`` = 0: the PC paper (Li et al.), Results,
  white-box attacks ("maximum iteration steps ... 100, learning rate of 0.001, confidence 0").
  Note that the authors' code uses lr 0.01; 0.001 with only 100 iterations moves each w by at
  most about 0.1, so this setting is deliberately weak (it leaves 42% accuracy on the PC
  paper's CE MNIST model, Table 1). The ``cw-mmc`` and ``cw-pc-1000`` presets are stronger.
* ``abort_early`` = True: the authors' code. Every steps/10 iterations a sample whose loss
  has not dropped by 0.01% since the last check stops for the rest of that search step.
  We decide this per sample (the authors' code stops the whole batch), so a sample's result
  does not depend on which other samples share its batch.

``queries``: model evaluations a sample went through until its returned example was found:
one forward pass on the clean x, then one forward+backward pass per iteration (summed over
search steps; iterations after an early abort are not run and not counted). Samples never
fooled report the total. With ``eot`` every one of these evaluations is ``eot`` passes and counts eot.

``eot`` (Expectation over Transformation, Athalye et al. 2018; ``robustloss.attacks.eot``): against a
randomised model (``robustloss.defenses``) one forward pass per iteration makes Adam follow the noise
of that pass's draw, and a "success" may fool that draw only. With ``eot > 1`` each iteration runs
``eot`` forward/backward passes at the same iterate: Adam gets the gradient (w.r.t. w) of the whole
loss ||x_adv - x||^2 + c f averaged over the passes, abort_early watches the averaged loss, and the
success test that drives the best-distance bookkeeping and the binary search (and the clean check) is
made on the averaged class probabilities, log(mean softmax). Differences of log-mean-softmax are
logit differences when there is one pass, so ``confidence`` keeps its meaning: a log-odds margin, here
between expected probabilities. ``eot = 1`` is exactly the plain attack.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.attacks.base import Attack
from robustloss.attacks.eot import check_eot, eot_hyperparameter, eot_logits, mean_logits
from robustloss.attacks.objectives import Objective, logit_margin
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS

# atanh(+-1) is infinite: pull 2x - 1 slightly inside (-1, 1) (the authors' code uses 0.999999).
_TANH_SHRINK = 1 - 1e-6
# Upper bound on c while none is known (the authors' code uses 1e10 the same way).
_NO_UPPER_BOUND = 1e10
# abort_early: the loss must drop by this relative amount between checks (the authors' .9999).
_MIN_IMPROVEMENT = 1e-4


def to_tanh_space(x: Tensor) -> Tensor:
    return torch.atanh((2 * x - 1) * _TANH_SHRINK)


def from_tanh_space(w: Tensor) -> Tensor:
    # tanh is in [-1, 1] in floating point too, so the image is exactly within [0, 1].
    return (torch.tanh(w) + 1) / 2


def cw_loss_term(logits: Tensor, goal: Tensor, targeted: bool, confidence: float) -> Tensor:
    """C&W's f: the margin still to overcome, floored at -kappa (per sample, to minimise)."""
    return (-logit_margin(logits, goal, targeted)).clamp_min(-confidence)


def reaches_confidence(logits: Tensor, y: Tensor, goal: Tensor, targeted: bool, confidence: float) -> Tensor:
    """Success with margin kappa: the argmax after handicapping the goal class by kappa.

    With kappa = 0 this is exactly the base class's final test (plain argmax), so a kept example
    is also judged fooled there."""
    handicap = F.one_hot(goal, logits.shape[1]).to(logits.dtype) * confidence
    if targeted:
        return (logits - handicap).argmax(dim=1) == goal
    return (logits + handicap).argmax(dim=1) != y


def distortion_summary(l2: Tensor, success: Tensor) -> dict:
    """Mean and median L2 distortion over the successful samples, and their number ``n``.

    The MMC paper (Tables 2, 4, 5) reports the averaged C&W distortion of successful examples;
    the median is the robust companion. Mean and median are NaN when nothing succeeded."""
    chosen = l2[success.bool()].detach().double()
    if chosen.numel() == 0:
        return {"mean": math.nan, "median": math.nan, "n": 0}
    return {"mean": chosen.mean().item(), "median": chosen.quantile(0.5).item(), "n": int(chosen.numel())}


@ATTACKS.register("cw")
class CarliniWagnerL2(Attack):
    name = "cw"
    norm = "l2"

    def __init__(
        self,
        *,
        eps: float | None = None,
        binary_search_steps: int = 9,
        initial_const: float = 0.01,
        steps: int = 100,
        lr: float = 0.001,
        confidence: float = 0.0,
        abort_early: bool = True,
        targeted: bool = False,
        objective: str = "cw",
        eot: int = 1,
    ):
        if objective not in ("cw", "adaptive"):
            raise ValueError(f"cw: C&W always uses its logit margin on the model's logits; objective must be "
                             f"'cw' or 'adaptive', got {objective!r}")
        super().__init__(eps=eps, targeted=targeted, objective="cw")
        if int(binary_search_steps) != binary_search_steps or binary_search_steps < 1:
            raise ValueError(f"cw: binary_search_steps must be an integer >= 1, got {binary_search_steps}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"cw: steps must be an integer >= 1, got {steps}")
        if not (initial_const > 0 and math.isfinite(initial_const)):
            raise ValueError(f"cw: initial_const must be a finite number > 0, got {initial_const}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"cw: lr must be a finite number > 0, got {lr}")
        if not (confidence >= 0 and math.isfinite(confidence)):
            raise ValueError(f"cw: confidence must be a finite number >= 0, got {confidence}")
        self.binary_search_steps, self.steps = int(binary_search_steps), int(steps)
        self.initial_const, self.lr, self.confidence = float(initial_const), float(lr), float(confidence)
        self.abort_early = bool(abort_early)
        self.eot = check_eot(self.name, eot)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "binary_search_steps": self.binary_search_steps,
            "initial_const": self.initial_const,
            "steps": self.steps,
            "lr": self.lr,
            "confidence": self.confidence,
            "abort_early": self.abort_early,
        } | eot_hyperparameter(self.eot)

    # Long on purpose: the binary search over c and its inner Adam loop are one algorithm (Carlini &
    # Wagner 2017, Sec. V), read side by side with the paper; the per-sample bookkeeping is shared.
    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        n = len(x)
        w_start = to_tanh_space(x)
        const = torch.full((n,), self.initial_const, dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, _NO_UPPER_BOUND)

        best = x.clone()  # clean x until a (budget-respecting) success is found
        best_l2 = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        # Samples fooled as they are (misclassified, or already the target) are returned exactly
        # unchanged at distance 0 rather than through the tanh round trip, and not optimised.
        with torch.no_grad():
            fooled = reaches_confidence(eot_logits(model, x, self.eot), y, goal, self.targeted, self.confidence)
        best_l2[fooled] = 0.0
        used = torch.full((n,), self.eot, dtype=torch.int64, device=x.device)  # that forward pass (eot passes)
        queries_at_best = used.clone()
        check_every = max(1, self.steps // 10)

        for _ in range(self.binary_search_steps):
            w = w_start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)  # fresh state per search step
            active = ~fooled
            if not active.any():
                break
            found = torch.zeros_like(active)  # success at this c (drives the binary search)
            previous = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)

            for step in range(self.steps):
                index = active.nonzero().squeeze(1)
                x_adv = from_tanh_space(w[index])
                logits, l2_sq, loss, grad = self._loss_and_gradient(model, w, x_adv, x[index], goal[index],
                                                                    const[index])
                used[index] += self.eot

                # Record this iterate (it is the point the forward pass just evaluated).
                with torch.no_grad():
                    hit = reaches_confidence(logits, y[index], goal[index], self.targeted, self.confidence)
                    found[index] |= hit
                    l2 = l2_sq.sqrt()
                    keep = hit & (l2 < best_l2[index])
                    if self.eps is not None:
                        keep &= l2 <= self.eps
                    kept = index[keep]
                    best[kept] = x_adv[keep].detach()
                    best_l2[kept] = l2[keep]
                    queries_at_best[kept] = used[kept]

                # Samples frozen by abort_early keep their w; Adam's state for them is discarded
                # at the next search step anyway.
                frozen = w.detach().clone()
                w.grad = grad
                optimizer.step()
                with torch.no_grad():
                    w.copy_(torch.where(active.view(-1, 1, 1, 1), w, frozen))

                if self.abort_early and step % check_every == 0:
                    loss = loss.detach()
                    stalled = previous[index] - loss < _MIN_IMPROVEMENT * previous[index].abs()
                    active[index[stalled]] = False
                    previous[index] = loss
                    if not active.any():
                        break

            # Binary search on c, per sample.
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            bounded = upper < _NO_UPPER_BOUND
            const = torch.where(bounded, (lower + upper) / 2, const * 10)

        queries = torch.where(torch.isfinite(best_l2), queries_at_best, used)
        return best, queries

    def _loss_and_gradient(self, model: nn.Module, w: Tensor, x_adv: Tensor, x: Tensor, goal: Tensor,
                           const: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(logits, ||x_adv - x||^2, loss per sample, gradient of the summed loss w.r.t. w) at the
        iterate x_adv = from_tanh_space(w[rows]). With eot > 1 the loss and the gradient are averaged
        over ``eot`` passes and the logits are the log-mean-softmax of the passes (for the success test);
        eot = 1 returns the single pass's own values (the plain attack, bit for bit).

        Not ``eot.eot_gradient``: the gradient is taken w.r.t. w, through the tanh change of variables
        and the distance term, not w.r.t. the model's input. One pass at a time; the graph of x_adv(w)
        is shared by the passes, so it is retained until the last one."""
        l2_sq = (x_adv - x).flatten(1).pow(2).sum(dim=1)
        passes, losses, grad = [], [], None
        for p in range(self.eot):
            logits = model(x_adv)
            loss = l2_sq + const * cw_loss_term(logits, goal, self.targeted, self.confidence)
            (more,) = torch.autograd.grad(loss.sum(), w, retain_graph=p < self.eot - 1)
            if self.eot == 1:
                return logits, l2_sq, loss, more
            # anchored at the first pass: identical passes (a deterministic model) average to exactly the
            # single-pass value, so there C&W's iterates are those of eot = 1
            if grad is None:
                first_grad, first_loss, grad = more, loss.detach(), torch.zeros_like(more)
            else:
                grad += more - first_grad
                losses.append(loss.detach() - first_loss)
            passes.append(logits.detach())
        grad = first_grad + grad / self.eot
        loss = first_loss + torch.stack(losses).sum(dim=0) / self.eot
        return mean_logits(passes), l2_sq, loss, grad


register_preset(
    "cw-mmc", "cw",
    "MMC paper (Pang et al. 2020), Sec. 4.2 and Table 2 Part I: 9 binary search steps, initial c = 0.01, "
    "1,000 iterations per c, learning rate 0.005",
    binary_search_steps=9, initial_const=0.01, steps=1000, lr=0.005,
)
register_preset(
    "cw-pc-100", "cw",
    "PC paper (Li et al.), Results / Table 1: at most 100 iterations, learning rate 0.001, confidence 0",
    steps=100, lr=0.001, confidence=0.0,
)
register_preset(
    "cw-pc-1000", "cw",
    "PC paper (Li et al.), Table 2 (comparison with GCE): max iterations of C&W 1,000 as in the GCE paper; "
    "learning rate 0.001 and confidence 0 as in Table 1",
    steps=1000, lr=0.001, confidence=0.0,
)
