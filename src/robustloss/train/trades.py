"""TRADES (Zhang et al. 2019): trade natural accuracy against robustness through the loss.

Instead of training on adversarial examples, every example contributes

    L(f(x), y) + beta * KL( softmax(f(x)) || softmax(f(x_adv)) )

where ``L`` is the phase's own training loss (so TRADES composes with PC, MMC, I-SCE... as
well as with CE, the original's choice) and x_adv maximises the KL term inside the eps-ball:
the evaluation's PGD (``robustloss.attacks``) with the KL as its objective, from
x + 0.001 * N(0, I), with the model in eval mode and the clean distribution held fixed during
the search, as in the authors' code. In the training step both distributions carry gradient.
The KL is summed over classes and averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robustloss.attacks import create_attack
from robustloss.attacks.iterative import IterativeGradientAttack
from robustloss.attacks.step_rule import default_step_size
from robustloss.losses.base import Loss
from robustloss.models.classifier import Classifier
from robustloss.models.modes import kept_modes
from robustloss.train.adversarial import AdversarialTraining
from robustloss.train.config import AdversarialConfig

START_SCALE = 0.001  # std of the Gaussian start (TRADES' reference implementation)


def kl_per_sample(clean_logits: Tensor, adv_logits: Tensor) -> Tensor:
    """KL(softmax(clean) || softmax(adv)) per sample, computed from log-probabilities for stability."""
    clean_log_probs = F.log_softmax(clean_logits.float(), dim=1)
    adv_log_probs = F.log_softmax(adv_logits.float(), dim=1)
    return (clean_log_probs.exp() * (clean_log_probs - adv_log_probs)).sum(dim=1)


class KLObjective:
    """KL(clean || attacked) per sample, the clean logits held fixed: TRADES' inner maximisation as an
    attack objective. It ignores the labels, and the attack must keep every row (no early stop)."""

    __name__ = "trades-kl"

    def __init__(self):
        self.clean_logits: Tensor | None = None

    def __call__(self, logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
        if self.clean_logits is None or len(self.clean_logits) != len(logits):
            raise RuntimeError("the TRADES KL objective needs the clean logits of exactly the batch attacked")
        return kl_per_sample(self.clean_logits, logits)


class TradesTraining(AdversarialTraining):
    def __init__(self, config: AdversarialConfig, loss_fn: Loss, model: Classifier, precision: str = "fp32"):
        self.kl = KLObjective()  # before the base class builds the attack, which maximises it
        super().__init__(config, loss_fn, model, precision)
        self.beta = config.resolved_beta

    def loss_objective(self, loss_fn: Loss) -> None:
        return None  # TRADES attacks its KL term, not the training loss

    def make_attack(self) -> IterativeGradientAttack:
        """PGD on the KL, every step on every example, from the Gaussian start when random starts are on."""
        config = self.config
        step = ({"step_size": config.step_size} if config.step_size is not None
                else {"step_size": None, "relative_step": default_step_size(1.0, config.resolved_steps)})
        start = ({"random_start": True, "start_std": START_SCALE} if config.resolved_random_start
                 else {"random_start": False})
        return create_attack("pgd", eps=config.eps_range[1], steps=config.resolved_steps, early_stop=False,
                             objective=self.kl, **step, **start)

    def craft_kl(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """x_adv maximising the KL to the (fixed) clean prediction, per-example eps."""
        eps = self.draw_eps(len(x), generator)
        with torch.no_grad(), kept_modes(self.model):
            self.model.eval()
            self.kl.clean_logits = self.model(x).detach()
        try:
            return self.attack.craft(self.model, x, self.kl.clean_logits.argmax(1), generator=generator,
                                     precision=self.precision, eps=eps.to(x.device))
        finally:
            self.kl.clean_logits = None

    def step_loss(self, loss_fn: Loss, x: Tensor, y: Tensor, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor, int]:
        x_adv = self.craft_kl(x, generator)
        logits, features = self.model.forward_with_features(x)
        adv_logits = self.model(x_adv)
        loss = loss_fn(logits, y, features) + self.beta * kl_per_sample(logits, adv_logits).mean()
        return loss, logits, len(x)
