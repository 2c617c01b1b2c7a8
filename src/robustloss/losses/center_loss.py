"""Center loss (Wen, Zhang, Li & Qiao, ECCV 2016, "A Discriminative Feature Learning
Approach for Deep Face Recognition").

Softmax cross-entropy plus a pull of each penultimate feature z towards a learned center
c_y of its class (the center term is the paper's Eq. 2, the joint objective
L = L_S + lam * L_C follows it; later equation numbers were not checked):

    L = CE(logits, y) + lam * 1/2 * ||z - c_y||^2,

averaged over the batch (the authors' Caffe layer also divides the summed center term by
the batch size). CE keeps the classes apart, the center term makes each class compact.

Defaults and where they come from:

* lam = 0.003: the value Wen et al. use (with alpha = 0.5) for their face-recognition
  models, the only single setting the paper commits to. Their MNIST toy example (Fig. 3,
  2-D features) only sweeps lam over {0.001, 0.01, 0.1, 1} for visualisation.
* Wen's center update rate alpha = 0.5 (their center update rule, Algorithm 1) has no counterpart here: the
  centers are ordinary trainable parameters of this loss, optimised by gradient descent
  with the same optimiser as the model (the trainer adds ``loss.parameters()`` to it).
  Their gradient is lam * (c_j - z_i) per sample of class j, divided by the batch size,
  instead of Wen's separate rule c_j -= alpha * sum_i (c_j - z_i) / (1 + n_j). One
  consequence: with plain SGD the centers move lam times slower than Wen's rule would move
  them (Adam's per-parameter normalisation largely removes that difference).
* Center initialisation: uniform in +-sqrt(3 / feature_dim), the Caffe "xavier" filler
  (FAN_IN) that the authors' released prototxts use for the centers.

The centers are created in ``bind(model)`` (feature_dim and num_classes come from the
model), not in ``make_head``: the trainer calls ``bind`` both when a phase starts and when a
run resumes (create_loss -> bind -> load_state_dict), while ``make_head`` is not called on
resume. The head stays the standard linear one, so ``make_head`` returns None.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.losses.base import Loss
from robustloss.losses.registry import LOSSES


@LOSSES.register("center")
class CenterLoss(Loss):
    name = "center"
    attack_objective = "ce"  # standard linear head; the center term only shapes training

    centers: nn.Parameter | None

    def __init__(self, lam: float = 0.003):
        super().__init__()
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise ConfigError(f"center.lam must be a finite number >= 0, got {lam!r}")
        self.lam = float(lam)
        self.register_parameter("centers", None)  # created by bind(), once the shapes are known

    def hyperparameters(self) -> dict:
        return {"lam": self.lam}

    def bind(self, model: nn.Module) -> None:
        """Create the (num_classes x feature_dim) centers on the model's device."""
        shape = (int(model.num_classes), int(model.feature_dim))
        if self.centers is not None:
            if tuple(self.centers.shape) != shape:
                raise ConfigError(
                    f"center loss already has centers of shape {tuple(self.centers.shape)}, "
                    f"but the model needs {shape} (num_classes x feature_dim)"
                )
            return  # binding again (same model shape) keeps the trained centers
        reference = next(model.parameters(), None)
        device = reference.device if reference is not None else None
        dtype = reference.dtype if reference is not None else None
        bound = math.sqrt(3.0 / shape[1])
        centers = torch.empty(shape, device=device, dtype=dtype).uniform_(-bound, bound)
        self.centers = nn.Parameter(centers)

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        if features is None:
            raise ValueError("the center loss needs the penultimate features: call it as loss(logits, labels, features)")
        if self.centers is None:
            raise RuntimeError("the center loss has no centers yet: call bind(model) before using it")
        if features.dim() != 2 or features.shape[1] != self.centers.shape[1]:
            raise ValueError(
                f"center loss expects features of shape (N, {self.centers.shape[1]}), got {tuple(features.shape)}"
            )
        ce = F.cross_entropy(logits, labels, reduction="none")
        pull = 0.5 * (features - self.centers[labels]).pow(2).sum(dim=1)  # 1/2 ||z - c_y||^2
        return ce + self.lam * pull
