"""numpy arrays -> ImageSplit, the one conversion every file-format loader ends with."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from robustloss.data.split import ImageSplit


def split_from_numpy(
    images: np.ndarray, labels: np.ndarray, extra_labels: Mapping[str, np.ndarray] | None = None
) -> ImageSplit:
    """Images must already be NCHW uint8; they are kept as uint8 (4x less memory than float)."""
    if images.dtype != np.uint8:
        raise TypeError(f"real datasets are stored as uint8, got {images.dtype}")
    # ascontiguousarray: transposed views (SVHN, CIFAR) would otherwise make every batch
    # gather strided memory; from_numpy then shares it without a second copy.
    return ImageSplit(
        torch.from_numpy(np.ascontiguousarray(images)),
        _label_tensor(labels),
        {key: _label_tensor(values) for key, values in (extra_labels or {}).items()},
    )


def _label_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1).copy())
