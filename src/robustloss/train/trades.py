"""TRADES (Zhang et al. 2019): trade natural accuracy against robustness through the loss.

Instead of training on adversarial examples, every example contributes

    L(f(x), y) + beta * KL( softmax(f(x)) || softmax(f(x_adv)) )

where ``L`` is the phase's own training loss (so TRADES composes with PC, MMC, I-SCE... as
well as with CE, the original's choice) and x_adv maximises the KL term inside the eps-ball:
signed-gradient ascent from x + 0.001 * N(0, I), with the model in eval mode and the clean
distribution held fixed during the search, as in the authors' code. In the training step both
distributions carry gradient. The KL is summed over classes and averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robustloss.losses.base import Loss
from robustloss.models.classifier import Classifier
from robustloss.train.adversarial import AdversarialTraining, _mode, perturb
from robustloss.train.config import AdversarialConfig

START_SCALE = 0.001  # std of the Gaussian start (TRADES' reference implementation)


def kl_per_sample(clean_logits: Tensor, adv_logits: Tensor) -> Tensor:
    """KL(softmax(clean) || softmax(adv)) per sample, computed from log-probabilities for stability."""
    clean_log_probs = F.log_softmax(clean_logits.float(), dim=1)
    adv_log_probs = F.log_softmax(adv_logits.float(), dim=1)
    return (clean_log_probs.exp() * (clean_log_probs - adv_log_probs)).sum(dim=1)


class TradesTraining(AdversarialTraining):
    def __init__(self, config: AdversarialConfig, loss_fn: Loss, model: Classifier):
        super().__init__(config, loss_fn, model)  # its gain_fn goes unused: craft maximises the KL instead
        self.beta = config.resolved_beta

    def craft(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """x_adv maximising the KL to the (fixed) clean prediction, per-example eps."""
        eps = self.draw_eps(len(x), generator)
        with torch.no_grad(), _mode(self.model, training=False):
            clean_logits = self.model(x).detach()

        def gain(logits: Tensor, features: Tensor, labels: Tensor) -> Tensor:
            return kl_per_sample(clean_logits, logits)

        start = None
        if self.config.resolved_random_start:
            noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
            start = x + START_SCALE * noise
        return perturb(self.model, x, clean_logits.argmax(1), gain_fn=gain, eps=eps,
                       steps=self.config.resolved_steps, step_size=self.step_sizes(eps),
                       random_start=False, generator=generator, start=start)

    def step_loss(self, loss_fn: Loss, x: Tensor, y: Tensor, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor, int]:
        x_adv = self.craft(x, generator)
        logits, features = self.model.forward_with_features(x)
        adv_logits = self.model(x_adv)
        loss = loss_fn(logits, y, features) + self.beta * kl_per_sample(logits, adv_logits).mean()
        return loss, logits, len(x)
