"""One training step's forward computation as a module, so DDP can wrap all of it.

DDP synchronises the gradients of the module it wraps, and only through that module's
``forward``. A step is more than ``model(x)``: adversarial training crafts its examples
first and TRADES takes two forward passes, and some losses carry parameters of their own
(center-loss centers). Wrapping the whole step - model, loss and adversarial hook - makes
every parameter that receives a gradient part of the synchronised module, and keeps the
single-process path exactly what it was (the module is simply called without DDP).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from robustloss.losses.base import Loss
from robustloss.models.classifier import Classifier


class TrainingStep(nn.Module):
    def __init__(self, model: Classifier, loss: Loss, loss_fn: Callable[..., Tensor], adversarial=None):
        super().__init__()
        self.model = model
        self.loss = loss  # registered so that its parameters (if any) are synchronised too
        self.loss_fn = loss_fn  # ``loss`` itself, or its float32 guard under bf16
        self.adversarial = adversarial

    def forward(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, int]:
        """(loss, logits of the examples trained on, how many of them are adversarial)."""
        if self.adversarial is not None:
            return self.adversarial.step_loss(self.loss_fn, x, y, generator)
        logits, features = self.model.forward_with_features(x)
        return self.loss_fn(logits, y, features), logits, 0
