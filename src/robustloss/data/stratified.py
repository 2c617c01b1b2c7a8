"""A seeded, stratified train/test split for the embedded datasets that ship without one.

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
