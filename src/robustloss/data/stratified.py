"""Class-stratified subsets: a seeded train/test split for the embedded datasets that ship
without one, and a deterministic "first n, class proportions kept" subset for training.

Method (kept simple so it can be re-implemented anywhere from this description):

1. ``rng = numpy.random.default_rng(seed)``;
2. for each class c in increasing order: take the indices of class c in increasing order,
   apply ``rng.permutation`` to them, and send the first ``n_test(c)`` to test, the rest to train;
3. shuffle the concatenated train indices with ``rng.permutation``, then the test indices
   likewise (in that order), so that a prefix of either split mixes the classes - the
   source arrays are sorted by class, and a "first 100 test images" subset would otherwise
   be all zeros.

The same seed gives the same split on every machine (numpy guarantees default_rng streams).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def stratified_split(labels: np.ndarray, test_size: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, test_indices). ``test_size``: an int is a count per class, a float
    a fraction of each class (rounded half to even, as ``round`` does)."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = test_size if isinstance(test_size, (int, np.integer)) else int(round(test_size * len(members)))
        if not 0 < n_test < len(members):
            raise ValueError(f"class {c} has {len(members)} samples; cannot put {n_test} in the test split")
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return train, test


def stratified_indices(labels: Tensor, n: int) -> Tensor:
    """Indices (ascending) of ``n`` samples keeping the class proportions of ``labels``.

    Each class gets floor(n * share) samples and the few left over go to the classes with the
    largest remainders (largest-remainder apportionment; the stable sort breaks ties toward
    the lower class), in integer arithmetic so float rounding never changes the choice.
    Within a class the first samples in dataset order are taken: the subset is deterministic
    and needs no random draw, so it leaves the run's generator untouched.
    """
    total = len(labels)
    if n >= total:
        return torch.arange(total)
    classes, counts = torch.unique(labels, return_counts=True)
    quotas = [n * int(c) // total for c in counts]
    remainders = [n * int(c) % total for c in counts]
    for i in sorted(range(len(classes)), key=lambda i: -remainders[i])[: n - sum(quotas)]:
        quotas[i] += 1
    chosen = [torch.nonzero(labels == cls).flatten()[:quota] for cls, quota in zip(classes, quotas)]
    return torch.cat(chosen).sort().values
