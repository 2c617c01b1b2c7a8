"""SVHN (Street View House Numbers), cropped-digit format: 32x32 colour, 73257 train / 26032 test.

The ``.mat`` files hold ``X`` as (H, W, C, N) uint8 and ``y`` as (N, 1) with the digit 0
stored as label 10 (MATLAB's 1-based habit); we map 10 -> 0 so labels are the digits.
The ``extra`` split is not used. Files are looked for in ``<root>/svhn/`` (where
``robustloss data fetch`` puts them) and then in ``<root>`` (torchvision's layout).
URLs and MD5s as in torchvision/datasets/svhn.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustloss.data.format_error import DatasetFormatError
from robustloss.data.from_numpy import split_from_numpy
from robustloss.data.locate import find_files
from robustloss.data.spec import DatasetSpec, Download
from robustloss.data.split import ImageSplit

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
ZERO_DIGIT_LABEL = 10


def read_svhn_mat(path: Path) -> ImageSplit:
    import scipy.io  # imported here: only SVHN needs it, and it is slow to import

    # scipy reports damaged files with a mix of exception types (an HTML error page saved
    # as .mat gives IndexError); all of them mean "not the published file".
    unreadable = (
        scipy.io.matlab.MatReadError, ValueError, TypeError, IndexError, KeyError, OSError, NotImplementedError
    )
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except unreadable as err:
        raise DatasetFormatError(f"{path}: not a readable MATLAB file ({err})") from None
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetFormatError(f"{path}: expected variables 'X' and 'y', found {found}")
    x, y = mat["X"], mat["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DatasetFormatError(f"{path}: 'X' should be (32, 32, 3, N) uint8, got {x.shape} {x.dtype}")
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    if len(labels) != x.shape[3]:
        raise DatasetFormatError(f"{path}: {x.shape[3]} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > ZERO_DIGIT_LABEL):
        raise DatasetFormatError(f"{path}: labels should be 1..10, found {labels.min()}..{labels.max()}")
    labels[labels == ZERO_DIGIT_LABEL] = 0
    return split_from_numpy(x.transpose(3, 2, 0, 1), labels)  # HWCN -> NCHW


def _locate_svhn(root: Path) -> dict[str, Path]:
    return find_files("svhn", root, [root / "svhn", root], SVHN_FILES)


def _load_svhn(root: Path) -> tuple[ImageSplit, ImageSplit]:
    paths = _locate_svhn(root)
    return read_svhn_mat(paths["train_32x32.mat"]), read_svhn_mat(paths["test_32x32.mat"])


SVHN = DatasetSpec(
    name="svhn",
    num_classes=10,
    image_shape=(3, 32, 32),
    class_names=tuple(str(d) for d in range(10)),
    load=_load_svhn,
    locate=_locate_svhn,
    files=SVHN_FILES,
    downloads=(
        Download(f"{SVHN_URL}train_32x32.mat", "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        Download(f"{SVHN_URL}test_32x32.mat", "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    ),
    color=True,
    description="SVHN cropped house-number digits, 32x32 colour, 73257 train / 26032 test (label 10 mapped to 0).",
)
