"""The loss contract.

A loss maps (logits, labels, features) to per-sample values; ``forward`` averages them.
Per-sample values are the primitive because adversarial training, TRADES-style mixing and
attack objectives all need them.

A loss may also shape the classifier: ``make_head`` returns the head module the model
must use while training with this loss (MMC centers, cosine heads, normalised logits).
``None`` keeps the standard linear head. The saved model carries whatever head it was
trained with, so attacks always see the real decision function. ``make_head`` is called
once, when a recipe phase with this loss starts; ``bind(model)`` is then called so a loss
can read the model's head (e.g. EMC's trainable centers for their prior term).

A loss may own trainable parameters that only matter in training (the center loss's class
centers): the trainer optimises them with the model and saves them in its checkpoints.

``attack_objective`` names the objective (see ``robustloss.attacks.objectives``) that fits
the loss's head; gradient attacks use it when asked for the ``adaptive`` objective.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn


class Loss(nn.Module):
    name: ClassVar[str] = ""
    attack_objective: ClassVar[str] = "ce"

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        return self.per_sample(logits, labels, features).mean()

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module | None:
        return None

    def bind(self, model: nn.Module) -> None:
        """Called with the model being trained, after its head is in place."""

    def hyperparameters(self) -> dict:
        """The values that define this loss (saved with checkpoints and shown in reports)."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
