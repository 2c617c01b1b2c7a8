"""Adversarial training (AT): replace part of each mini-batch by L-inf adversarial examples.

Training needs a budget per example (the PC paper draws eps ~ U[lo, hi] for every example,
Table 5), which the evaluation attacks in ``robustloss.attacks`` do not take, so this module
has its own compact signed-gradient loop:

* ``perturb`` - FGSM / PGD with per-example eps and step size, projected onto each example's
  eps-ball and onto the [0, 1] image box;
* ``AdversarialTraining`` - the per-step hook the epoch loop calls: it makes the first
  ``round(ratio * n)`` examples of the (already shuffled) batch adversarial and leaves the
  rest clean, so ratio 0.5 is the papers' 1:1 mix and ratio 1.0 is Madry et al.'s AT.
  FGSM, FGSM from a random start ("fast" AT) and PGD all go through it; TRADES, which
  changes the loss rather than the batch, lives in ``robustloss.train.trades``.

Every random draw (eps, targets, random starts) comes from the run's own generator, whose
state the trainer checkpoints, so a resumed AT run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from robustloss.attacks.step_rule import default_step_size
from robustloss.attacks.objectives import get_objective, resolve_objective
from robustloss.losses.base import Loss
from robustloss.models.classifier import Classifier
from robustloss.train.config import AdversarialConfig

# (logits, features, labels) -> per-sample gain. ``labels`` are the true classes for an
# untargeted attack (which ascends the gain) and the targets for a targeted one (which descends).
GainFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@contextmanager
def _mode(module: nn.Module, training: bool) -> Iterator[None]:
    """Temporarily put ``module`` in train or eval mode, restoring its previous mode after."""
    was_training = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(was_training)


def _per_example(values: Tensor, like: Tensor) -> Tensor:
    """(n,) values shaped to broadcast over an (n, C, H, W) batch, on its device and dtype."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _project(x_adv: Tensor, x: Tensor, radius: Tensor) -> Tensor:
    """Clip to each example's L-inf ball around ``x``, then to valid pixels."""
    return torch.maximum(torch.minimum(x_adv, x + radius), x - radius).clamp(0.0, 1.0)


def perturb(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    gain_fn: GainFn,
    eps: Tensor,
    steps: int,
    step_size: Tensor,
    random_start: bool,
    generator: torch.Generator,
    target: Tensor | None = None,
    start: Tensor | None = None,
) -> Tensor:
    """Signed-gradient L-inf attack with a budget ``eps[i]`` and step ``step_size[i]`` per example.

    Untargeted: ascend ``gain_fn(logits, features, y)``; targeted: descend
    ``gain_fn(logits, features, target)``. The model is crafted against in eval mode because
    attack passes must not update BatchNorm running statistics (nor see dropout noise) - only
    the training step itself should; its previous mode is restored afterwards. Gradients are
    taken with ``torch.autograd.grad`` with respect to the input only, so no parameter ``.grad``
    is accumulated. ``generator`` (a CPU generator) supplies the random start; ``start``, when
    given, replaces it with a chosen starting point (projected into the ball first).

    Under the training step's bf16 autocast (``precision: bf16``) the forward passes run in
    bfloat16, which only makes the gradient's direction coarser; ``x``, ``x_adv`` and the
    gradient with respect to ``x_adv`` stay float32 (autocast lowers only the model's matmuls
    and convolutions), so the step, the projection and the clipping are exact float32.
    """
    if eps.shape != (len(x),) or step_size.shape != (len(x),):
        raise ValueError(f"eps and step_size need one value per example ({len(x)}), "
                         f"got shapes {tuple(eps.shape)} and {tuple(step_size.shape)}")
    x = x.detach()
    radius = _per_example(eps, x)
    stride = _per_example(step_size, x)
    goal, direction = (y, 1.0) if target is None else (target, -1.0)
    x_adv = x.clone()
    if start is not None:
        x_adv = _project(start.detach(), x, radius)
    elif random_start:
        noise = torch.rand(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        x_adv = _project(x + (2 * noise - 1) * radius, x, radius)
    with _mode(model, training=False), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            logits, features = model.forward_with_features(x_adv)
            gain = gain_fn(logits, features, goal).sum()  # per-sample gains: the sum's gradient is per example
            (grad,) = torch.autograd.grad(gain, x_adv)
            x_adv = _project(x_adv.detach() + direction * stride * grad.sign(), x, radius)
    return x_adv.detach()


def loss_gain(loss_fn: Loss, model: Classifier) -> GainFn:
    """The phase's training loss, per sample, as the attack's gain.

    Losses expect the head's training-mode output (I-SCE's head, for one, transforms its
    logits only in eval mode), so the head alone is re-evaluated in train mode on the
    features; the backbone stays in eval mode and BatchNorm statistics are left alone.
    """

    def gain(logits: Tensor, features: Tensor, labels: Tensor) -> Tensor:
        with _mode(model.head, training=True):
            train_logits = model.head(features)
        return loss_fn.per_sample(train_logits, labels, features)

    return gain


def objective_gain(name: str, model: Classifier, targeted: bool) -> GainFn:
    """An attack objective (``ce``, ``cw``, ``adaptive``...) as a gain for ``perturb``.

    Objectives already flip sign for targeted attacks (they are always maximised), while
    ``perturb`` descends toward targets, so the targeted form is negated here.
    """
    objective = get_objective(resolve_objective(name, model))
    if targeted:
        return lambda logits, features, labels: -objective(logits, labels, True)
    return lambda logits, features, labels: objective(logits, labels, False)


def adversarial_count(n: int, ratio: float) -> int:
    """round(ratio * n), halves rounded up (Python's round() would round 2.5 to 2 but 3.5 to 4)."""
    return min(n, math.floor(ratio * n + 0.5))


class AdversarialTraining:
    """Turns a clean batch into the mixed clean/adversarial batch of one training step."""

    def __init__(self, config: AdversarialConfig, loss_fn: Loss, model: Classifier):
        self.config = config
        self.model = model
        if config.objective == "loss":
            self.gain_fn = loss_gain(loss_fn, model)
        else:
            self.gain_fn = objective_gain(config.objective, model, config.targeted)

    def draw_eps(self, m: int, generator: torch.Generator) -> Tensor:
        lo, hi = self.config.eps_range
        if lo == hi:
            return torch.full((m,), lo)
        return lo + (hi - lo) * torch.rand(m, generator=generator)

    def step_sizes(self, eps: Tensor) -> Tensor:
        if self.config.step_size is not None:
            return torch.full_like(eps, self.config.step_size)
        if self.config.method == "fgsm":
            return eps.clone()
        if self.config.method == "fgsm-rs":
            return 1.25 * eps  # Wong et al. 2020: from a random start, a step of eps alone often falls short
        return default_step_size(eps, self.config.resolved_steps)

    def draw_targets(self, y: Tensor, generator: torch.Generator) -> Tensor:
        """A uniformly random wrong class per example."""
        k = self.model.num_classes
        shift = torch.randint(1, k, (len(y),), generator=generator).to(y.device)
        return (y + shift) % k

    def step_loss(self, loss_fn: Loss, x: Tensor, y: Tensor, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor, int]:
        """(loss to back-propagate, logits of the batch trained on, number of adversarial examples)."""
        x, m = self(x, y, generator)
        logits, features = self.model.forward_with_features(x)
        return loss_fn(logits, y, features), logits, m

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, int]:
        """(mixed batch, number of adversarial examples in it); the adversarial ones come first."""
        m = adversarial_count(len(y), self.config.ratio)
        if m == 0:
            return x, 0
        eps = self.draw_eps(m, generator)
        target = self.draw_targets(y[:m], generator) if self.config.targeted else None
        x_adv = perturb(
            self.model, x[:m], y[:m], gain_fn=self.gain_fn, eps=eps, steps=self.config.resolved_steps,
            step_size=self.step_sizes(eps), random_start=self.config.resolved_random_start,
            generator=generator, target=target,
        )
        return torch.cat([x_adv, x[m:]]), m
