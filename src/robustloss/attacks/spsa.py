"""SPSA: a gradient-free L-infinity attack (Uesato et al. 2018, "Adversarial risk and the dangers
of evaluating against weak attacks", ICML).

The attacker only sees the model's outputs. Each iteration estimates the gradient of the
objective J (per-sample gain, see ``robustloss.attacks.objectives``) at the current iterate with
simultaneous-perturbation finite differences along ``samples`` random Rademacher directions
v in {-1, +1}^d (Spall 1992):

    g = 1/S * sum_v  (J(x + delta v) - J(x - delta v)) / (2 delta) * v      (1/v_i = v_i for +-1)

then takes an Adam step (Kingma & Ba 2015) on the loss to *minimise*, -J, and projects onto the
L-infinity eps-ball around the clean image and onto [0, 1]:

    x_{t+1} = clip_[0,1]( clip_{x, eps}( x_t - lr * Adam(-g) ) )

Defaults and where they come from:

* ``lr = 0.01`` and ``delta = 0.01``: Uesato et al. 2018, as restated by the PC paper (black-box
  section: "learning rate of SPSA is set to 0.01, and the step size is delta = 0.01") and by the
  MMC paper (Sec. 4.4).
* ``samples = 128``: the MMC paper's SPSA "batch size" of 128 (Sec. 4.4, Table 3, after Uesato
  et al.). Table 3 also runs 4096 and 8192. Here a sample is one direction v, evaluated at
  x + delta v and x - delta v, so one iteration costs 2 * samples queries per image.
* ``steps = 100``: our choice, not a paper's. The MMC paper runs 10 iterations (its "SPSA_10";
  the subscript is the number of iteration steps, Table 1 caption); the PC paper states 10
  only for CIFAR-100 / Tiny ImageNet and no count for K/F/MNIST, CIFAR-10 and SVHN. An Adam step
  moves a pixel by about ``lr`` at most, so 10 steps of 0.01 cannot reach the PC paper's MNIST
  budget eps = 0.3. 100 steps of 0.01 can (a warning is raised where steps * lr < eps).
  The 10-iteration settings are available as presets.
* Adam's beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8: Kingma & Ba's defaults, fixed here.
* ``max_batch = 4096``: a memory bound, not an algorithm parameter. The 2 * samples * N
  perturbed images of an iteration (and the success checks) are evaluated in forward passes of
  at most ``max_batch`` images, and the gradient estimate is accumulated chunk by chunk, so SPSA with 8192 samples
  never holds an (N * 8192, C, H, W) tensor. The directions are drawn one at a time in a fixed
  order, so the result does not depend on ``max_batch`` (up to float summation order).

Probes x +- delta v are not clipped to [0, 1]: clipping would turn the central difference into
a one-sided one at every saturated pixel (most of an MNIST digit). Only the iterates, and hence
the returned images, are kept in [0, 1].

Early stopping: every iterate is checked with one forward pass (including the last one); a
sample stops, keeping the first iterate that succeeded, as soon as it is misclassified
(untargeted) or classified as the target (targeted). A sample that succeeded at check t
(t = 0 is the clean image) used ``t * (2 * samples + 1) + 1`` queries; one that never
succeeded used ``steps * (2 * samples + 1) + 1``.

The model is only ever called under ``torch.no_grad()``: no gradient is taken anywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustloss.attacks.base import GradientFreeAttack, warn_if_budget_unreachable
from robustloss.attacks.objectives import Objective
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS

# Uesato et al. take Adam steps; these are Adam's own defaults (Kingma & Ba 2015).
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8


@ATTACKS.register("spsa")
class SPSA(GradientFreeAttack):
    name = "spsa"
    norm = "linf"

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 100,
        samples: int = 128,
        lr: float = 0.01,
        delta: float = 0.01,
        max_batch: int = 4096,
        targeted: bool = False,
        objective: str = "ce",
    ):
        super().__init__(eps=eps, targeted=targeted, objective=objective)
        if self.eps is None:
            raise ValueError("spsa: eps (the L-inf budget) is required")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"spsa: steps must be an integer >= 1, got {steps}")
        if int(samples) != samples or samples < 1:
            raise ValueError(f"spsa: samples must be an integer >= 1, got {samples}")
        if not lr > 0:
            raise ValueError(f"spsa: lr must be > 0, got {lr}")
        if not delta > 0:
            raise ValueError(f"spsa: delta (finite-difference step) must be > 0, got {delta}")
        if int(max_batch) != max_batch or max_batch < 2:
            raise ValueError(f"spsa: max_batch must be an integer >= 2 (one +delta and one -delta probe), got {max_batch}")
        self.steps, self.samples, self.max_batch = int(steps), int(samples), int(max_batch)
        self.lr, self.delta = float(lr), float(delta)
        # An Adam step moves each pixel by about lr at most.
        warn_if_budget_unreachable(self.name, self.steps, self.lr, self.eps)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "steps": self.steps, "samples": self.samples, "lr": self.lr, "delta": self.delta,
            "max_batch": self.max_batch,
        }

    def query(self, model, x, y, goal, objective, generator):
        lower, upper = (x - self.eps).clamp_min(0), (x + self.eps).clamp_max(1)
        x_adv = x.clone()  # rows of samples that succeeded are frozen: they hold the first success
        first_moment, second_moment = torch.zeros_like(x), torch.zeros_like(x)
        queries_per_step = 2 * self.samples + 1  # the gradient estimate plus one success check
        queries = torch.full((len(x),), self.steps * queries_per_step + 1, dtype=torch.int64, device=x.device)
        active = torch.arange(len(x), device=x.device)

        for t in range(self.steps + 1):
            hit = self.is_success(self._forward(model, x_adv[active]), y[active], goal[active])
            queries[active[hit]] = t * queries_per_step + 1
            active = active[~hit]
            if t == self.steps or len(active) == 0:
                break

            gain_grad = self.estimate_gradient(model, objective, x_adv[active], goal[active], generator)
            loss_grad = -gain_grad  # Adam minimises the loss -J
            m = ADAM_BETA1 * first_moment[active] + (1 - ADAM_BETA1) * loss_grad
            v = ADAM_BETA2 * second_moment[active] + (1 - ADAM_BETA2) * loss_grad.square()
            first_moment[active], second_moment[active] = m, v
            m_hat, v_hat = m / (1 - ADAM_BETA1 ** (t + 1)), v / (1 - ADAM_BETA2 ** (t + 1))
            step = self.lr * m_hat / (v_hat.sqrt() + ADAM_EPSILON)
            x_adv[active] = torch.min(torch.max(x_adv[active] - step, lower[active]), upper[active])
        return x_adv, queries

    def estimate_gradient(
        self, model: nn.Module, objective: Objective, x: Tensor, goal: Tensor, generator: torch.Generator | None,
    ) -> Tensor:
        """SPSA estimate of d objective / d x for each image of ``x`` (no autograd), using
        ``self.samples`` Rademacher directions per image and forward passes of at most
        ``self.max_batch`` images."""
        n = len(x)
        grad = torch.zeros_like(x)
        # Directions per forward pass; when even one direction for all n images (2n probes) is
        # too many, split the images instead.
        per_chunk = max(1, self.max_batch // (2 * n))
        rows = max(1, self.max_batch // 2)
        for start in range(0, self.samples, per_chunk):
            k = min(per_chunk, self.samples - start)
            directions = self._rademacher(generator, k, x)  # (k, n, C, H, W)
            for lo in range(0, n, rows):
                xs, vs, gs = x[lo:lo + rows], directions[:, lo:lo + rows], goal[lo:lo + rows]
                m = len(xs)
                probes = torch.cat([xs + self.delta * vs, xs - self.delta * vs]).flatten(0, 1)  # (2k m, C, H, W)
                gain = objective(model(probes), gs.repeat(2 * k), self.targeted).view(2, k, m)
                slope = (gain[0] - gain[1]) / (2 * self.delta)  # (k, m)
                grad[lo:lo + m] += torch.einsum("km,kmchw->mchw", slope.to(x.dtype), vs)
        return grad / self.samples

    def _forward(self, model: nn.Module, x: Tensor) -> Tensor:
        """The logits of ``x``, in forward passes of at most ``max_batch`` images."""
        return torch.cat([model(x[lo:lo + self.max_batch]) for lo in range(0, len(x), self.max_batch)])

    @staticmethod
    def _rademacher(generator: torch.Generator | None, k: int, x: Tensor) -> Tensor:
        """k directions of +-1 entries shaped like ``x``. They are drawn one direction at a time
        (always the same draw shape, in the same order) so that the random stream, and hence the
        attack, does not depend on how directions are grouped into forward passes."""
        bits = [torch.randint(0, 2, x.shape, generator=generator, dtype=torch.int8) for _ in range(k)]
        return (torch.stack(bits).to(x.device, x.dtype) * 2 - 1)


# PC paper, black-box section: lr 0.01, delta 0.01 (after Uesato et al.); it does not state the
# iteration count or batch size for K/F/MNIST, CIFAR-10 and SVHN: we use our defaults (100
# iterations, enough for eps = 0.3 at lr 0.01; 128 directions as in the MMC paper it follows).
register_preset("spsa-pc", "spsa",
                "PC paper, black-box section: lr 0.01, delta 0.01; iterations and batch not stated (ours: 100, 128)",
                steps=100, samples=128, lr=0.01, delta=0.01)
register_preset("spsa-pc-10", "spsa",
                "PC paper, CIFAR-100 / Tiny ImageNet: attack iterations reduced to 10; lr 0.01, delta 0.01",
                steps=10, samples=128, lr=0.01, delta=0.01)
# MMC paper Sec. 4.4 and Table 3: SPSA_10 (10 iterations), lr 0.01, delta 0.01, batch 128 / 4096 /
# 8192, with the adaptive objective (L_Ada^{un,1} / L_Ada^{tar,1} for MMC models, Appendix B.4).
for _batch in (128, 4096, 8192):
    register_preset(f"spsa-mmc-{_batch}", "spsa",
                    f"MMC paper, Sec. 4.4 / Table 3: 10 iterations, batch {_batch}, lr 0.01, delta 0.01, adaptive",
                    steps=10, samples=_batch, lr=0.01, delta=0.01, objective="adaptive")
del _batch
