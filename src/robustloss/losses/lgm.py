"""Large-margin Gaussian Mixture loss, identity covariance (Wan, Zhong, Li & Chen, CVPR 2018,
"Rethinking Feature Distribution for Loss Functions in Image Classification").

The features z are modelled as a mixture of K Gaussians N(mu_k, I) with equal priors. With
d_k = ||z - mu_k||^2 the posterior of class k is a softmax over -d_k / 2, so

    head (test-time logits):  h_k = -1/2 * d_k

Training adds two things (the paper's method section: the large-margin classification loss
L_cls,m and the likelihood regulariser L_lkd, combined as L_GM = L_cls,m + lambda * L_lkd;
equation numbers were not checked against the paper text):

    margin:     the true class's distance is enlarged by (1 + alpha) inside the softmax,
                training logits  -1/2 * d_k * (1 + alpha * 1[k = y]),  CE on those;
    likelihood: lambda * 1/2 * d_y, the negative log-likelihood of z under its own class
                Gaussian (constants dropped), which pulls z onto mu_y.

Everything is computed from the head's logits: d_k = -2 h_k, so the training logits are
h_k * (1 + alpha * 1[k = y]) and the regulariser is -lambda * h_y. ``per_sample`` must
therefore be given the logits of the head built by ``make_head``.

Defaults (the covariance is fixed to I, as in the authors' TensorFlow demo; the Caffe
version also learns diagonal variances):

* alpha = 1.0: the margin of the authors' own MNIST example (``margin_mul`` ramps up to a
  maximum of 1 in examples/mnist/lenet_rbf_train_test.prototxt of WeitaoVan/L-GM-loss).
* lam = 0.1: the likelihood weight that goes with alpha = 1 in common MNIST
  reimplementations of the identity-covariance L-GM loss (the authors' Caffe MNIST
  example, which also learns variances, sets ``center_coef: 0.001``). The authors'
  CIFAR-100 TensorFlow demo uses alpha = 0.1, lambda = 0.01 instead (the ``lgm_logits``
  call in tensorflow/resnet_model.py); pass those for CIFAR-style runs if wanted.
  NOTE: neither default was checked against the paper's own text.
* means initialised with Glorot/Xavier uniform on the (K, d) matrix, as the authors'
  TensorFlow code does (``xavier_initializer`` for ``rbf_centers``).

The margin is only part of training: attacks see h, the plain Gaussian posterior logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.errors import ConfigError
from robustloss.losses.base import Loss
from robustloss.losses.registry import LOSSES


class GaussianMeansHead(nn.Module):
    """z -> -1/2 ||z - mu_k||^2 for trainable class means mu (num_classes x feature_dim)."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.means = nn.Parameter(torch.empty(num_classes, feature_dim))
        nn.init.xavier_uniform_(self.means)

    def forward(self, z: Tensor) -> Tensor:
        # Differences rather than ||z||^2 - 2 z.mu + ||mu||^2: exact (never negative) and
        # its gradient is well behaved when z is on a mean; (N, K, d) is small for our heads.
        diff = z[:, None, :] - self.means[None, :, :]
        return -0.5 * diff.pow(2).sum(dim=2)


@LOSSES.register("lgm")
class LargeMarginGaussianMixture(Loss):
    name = "lgm"
    # "cw": the test-time logits are negative squared distances, unbounded in size, so a
    # trained model's softmax is saturated and CE gradients vanish; the margin alpha exists
    # only in training, so the logit margin is the objective that fits the real decision.
    attack_objective = "cw"

    def __init__(self, alpha: float = 1.0, lam: float = 0.1):
        super().__init__()
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"lgm.alpha (margin) must be a finite number >= 0, got {alpha!r}")
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise ConfigError(f"lgm.lam (likelihood weight) must be a finite number >= 0, got {lam!r}")
        self.alpha, self.lam = float(alpha), float(lam)

    def hyperparameters(self) -> dict:
        return {"alpha": self.alpha, "lam": self.lam}

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return GaussianMeansHead(feature_dim, num_classes)

    def per_sample(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        true_mask = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        margin_logits = logits * (1.0 + self.alpha * true_mask)  # -1/2 d_k (1 + alpha 1[k=y])
        ce = F.cross_entropy(margin_logits, labels, reduction="none")
        half_dist_true = -logits.gather(1, labels[:, None]).squeeze(1)  # 1/2 d_y
        return ce + self.lam * half_dist_true
