"""Adversarial training (AT): the policy that replaces part of each mini-batch by adversarial examples.

The examples are crafted by the evaluation's own attacks (``robustloss.attacks``): FGSM, FGSM from a
random start ("fast" AT, ``fgsm-rs``) and PGD, called with one budget per example (the PC paper draws
eps ~ U[lo, hi] for every example, Table 5). This module decides only

* which examples: the first ``round(ratio * n)`` of the (already shuffled) batch, so ratio 0.5 is the
  papers' 1:1 mix and ratio 1.0 is Madry et al.'s AT;
* which eps: drawn per example from the configured range;
* against what: the phase's training loss (``objective: loss``) or an attack objective, untargeted or
  towards random wrong classes.

The attacks run to their last step (``early_stop=False``): an example the model already gets wrong is
still pushed further, as textbook AT does. TRADES, which changes the loss rather than the batch, lives in
``robustloss.train.trades``. Every random draw (eps, targets, random starts) comes from the run's own
generator, whose state the trainer checkpoints, so a resumed AT run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch import Tensor

from robustloss.attacks import create_attack
from robustloss.attacks.iterative import IterativeGradientAttack
from robustloss.attacks.objectives import Objective
from robustloss.attacks.step_rule import default_step_size
from robustloss.losses.base import Loss
from robustloss.models.classifier import Classifier
from robustloss.models.modes import kept_modes
from robustloss.train.config import AdversarialConfig


class TrainingLossObjective:
    """The phase's training loss, per sample, as an attack objective (``objective: loss``).

    Losses expect the head's training-mode output (I-SCE's head, for one, transforms its logits only
    in eval mode) and some need the penultimate features (center loss), so while ``watching`` a hook
    keeps the features the attack's forward pass fed to the head, and the head alone is re-evaluated
    in train mode on them; the backbone stays in eval mode and BatchNorm statistics are left alone.
    """

    __name__ = "loss"

    def __init__(self, loss_fn: Loss, model: Classifier):
        self.loss_fn, self.model = loss_fn, model
        self._features: Tensor | None = None

    @contextmanager
    def watching(self) -> Iterator[None]:
        handle = self.model.head.register_forward_hook(self._keep_features)
        try:
            yield
        finally:
            handle.remove()
            self._features = None

    def _keep_features(self, module, inputs, output) -> None:
        self._features = inputs[0]

    def __call__(self, logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
        features = self._features
        if features is None or len(features) != len(logits):
            raise RuntimeError("the training-loss objective runs only inside watching(), after a forward pass")
        with kept_modes(self.model.head):
            self.model.head.train()
            train_logits = self.model.head(features)
        value = self.loss_fn.per_sample(train_logits, labels, features)
        return -value if targeted else value


def training_attack(config: AdversarialConfig, objective: str | Objective) -> IterativeGradientAttack:
    """The configured method as a ``robustloss.attacks`` attack with per-example budgets up to the range's top."""
    eps = config.eps_range[1]
    common = {"early_stop": False, "targeted": config.targeted, "objective": objective}
    if config.method in ("fgsm", "fgsm-rs") and config.step_size is None:
        random_start = config.resolved_random_start
        if random_start and config.method == "fgsm-rs":
            return create_attack("fgsm-rs", eps=eps, **common)
        if not random_start and config.method == "fgsm":
            return create_attack("fgsm", eps=eps, **common)
    # PGD, or a one-step method with a fixed step or a non-default start: PGD with those settings.
    if config.step_size is not None:
        step = {"step_size": config.step_size}
    else:
        # the step as a multiple of each example's own eps; for PGD the step rule evaluated at eps = 1
        per_eps = {"fgsm": 1.0, "fgsm-rs": 1.25}.get(config.method, default_step_size(1.0, config.resolved_steps))
        step = {"step_size": None, "relative_step": per_eps}
    return create_attack("pgd", eps=eps, steps=config.resolved_steps, random_start=config.resolved_random_start,
                         **step, **common)


def adversarial_count(n: int, ratio: float) -> int:
    """round(ratio * n), halves rounded up (Python's round() would round 2.5 to 2 but 3.5 to 4)."""
    return min(n, math.floor(ratio * n + 0.5))


class AdversarialTraining:
    """Turns a clean batch into the mixed clean/adversarial batch of one training step."""

    def __init__(self, config: AdversarialConfig, loss_fn: Loss, model: Classifier, precision: str = "fp32"):
        self.config, self.model, self.precision = config, model, precision
        self.objective = self.loss_objective(loss_fn)
        self.attack = self.make_attack()

    def loss_objective(self, loss_fn: Loss) -> TrainingLossObjective | None:
        """The training loss as the attack's objective (``objective: loss``), else None (a named objective)."""
        return TrainingLossObjective(loss_fn, self.model) if self.config.objective == "loss" else None

    def make_attack(self) -> IterativeGradientAttack:
        return training_attack(self.config, self.objective or self.config.objective)

    def draw_eps(self, m: int, generator: torch.Generator) -> Tensor:
        lo, hi = self.config.eps_range
        if lo == hi:
            return torch.full((m,), lo)
        return lo + (hi - lo) * torch.rand(m, generator=generator)

    def draw_targets(self, y: Tensor, generator: torch.Generator) -> Tensor:
        """A uniformly random wrong class per example."""
        k = self.model.num_classes
        shift = torch.randint(1, k, (len(y),), generator=generator).to(y.device)
        return (y + shift) % k

    def craft(self, x: Tensor, y: Tensor, eps: Tensor, generator: torch.Generator,
              target: Tensor | None = None) -> Tensor:
        watching = self.objective.watching() if self.objective is not None else nullcontext()
        with watching:
            return self.attack.craft(self.model, x, y, target=target, generator=generator, precision=self.precision,
                                     eps=eps.to(x.device))

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
        return torch.cat([self.craft(x[:m], y[:m], eps, generator, target), x[m:]]), m
