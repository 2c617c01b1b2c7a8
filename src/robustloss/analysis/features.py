"""Helpers shared by the feature-space analyses: penultimate features in batches, and a
class-stratified subsample of a test split."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


@torch.no_grad()
def penultimate_features(model: torch.nn.Module, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """``model.features(x)`` in eval mode, in batches, on x's device; (n, feature_dim)."""
    if not hasattr(model, "features"):
        raise TypeError(f"{type(model).__name__} has no features(x); feature analyses need a robustloss Classifier")
    was_training = model.training
    model.eval()  # BatchNorm must use its running statistics, as attacks and evaluation do
    try:
        parts = [model.features(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, getattr(model, "feature_dim", 0))


def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``n`` samples with every class in its original proportion.

    Each class gets its share of n (largest remainders round up, so the total is exactly n) and
    a seeded random choice of its members; n >= len(labels) returns every index."""
    labels = np.asarray(labels).reshape(-1)
    if n < 1:
        raise ValueError(f"subsample size must be >= 1, got {n}")
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    quota = np.floor(exact).astype(int)
    shortfall = n - quota.sum()
    quota[np.argsort(-(exact - quota), kind="stable")[:shortfall]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))
