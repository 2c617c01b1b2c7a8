"""CIFAR-10 and CIFAR-100 from the official "python version" pickles.

Each batch file is a dict with ``b"data"``: (N, 3072) uint8, one row per image holding the
1024 red, then 1024 green, then 1024 blue values of a 32x32 image in row-major order - so a
plain reshape to (N, 3, 32, 32) is already NCHW. Labels are ``b"labels"`` (CIFAR-10) or
``b"fine_labels"`` / ``b"coarse_labels"`` (CIFAR-100); we keep the 100 fine classes as the
labels and the 20 superclasses in ``extra_labels["coarse"]``.

``robustloss data fetch`` unpacks the archives into ``<root>``, which gives torchvision's
layout ``<root>/cifar-10-batches-py/`` and ``<root>/cifar-100-python/``; those are the
folders searched. URLs and MD5s as in torchvision/datasets/cifar.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from robustloss.data.format_error import DatasetFormatError
from robustloss.data.from_numpy import split_from_numpy
from robustloss.data.locate import find_files
from robustloss.data.safe_pickle import load_numpy_pickle
from robustloss.data.spec import DatasetSpec, Download
from robustloss.data.split import ImageSplit

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, "test_batch")
CIFAR100_FILES = ("train", "test")
CIFAR_IMAGE_SHAPE = (3, 32, 32)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_batch(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            batch = load_numpy_pickle(f)
    except (EOFError, ValueError, TypeError, IndexError, pickle.UnpicklingError) as err:
        raise DatasetFormatError(f"{path}: not a readable CIFAR batch file ({err})") from None
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    return batch


def _field(batch: dict[bytes, Any], key: bytes, path: Path) -> Any:
    if key not in batch:
        keys = ", ".join(repr(k) for k in batch)
        raise DatasetFormatError(f"{path}: missing key {key!r} (keys present: {keys})")
    return batch[key]


def _images(batch: dict[bytes, Any], path: Path) -> np.ndarray:
    data = np.asarray(_field(batch, b"data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != int(np.prod(CIFAR_IMAGE_SHAPE)):
        raise DatasetFormatError(f"{path}: b'data' should be (N, 3072) uint8, got {data.shape} {data.dtype}")
    return data.reshape(-1, *CIFAR_IMAGE_SHAPE)


def _labels(batch: dict[bytes, Any], key: bytes, path: Path, n_images: int) -> np.ndarray:
    labels = np.asarray(_field(batch, key, path), dtype=np.int64).reshape(-1)
    if len(labels) != n_images:
        raise DatasetFormatError(f"{path}: {n_images} images but {len(labels)} entries in {key!r}")
    return labels


def _decode_names(raw: Any) -> tuple[str, ...]:
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in raw)


# ---- CIFAR-10 -------------------------------------------------------------------------


def _locate_cifar10(root: Path) -> dict[str, Path]:
    return find_files("cifar10", root, [root / CIFAR10_FOLDER], CIFAR10_FILES)


def _load_cifar10(root: Path) -> tuple[ImageSplit, ImageSplit]:
    paths = _locate_cifar10(root)

    def read(names: tuple[str, ...]) -> ImageSplit:
        images, labels = [], []
        for name in names:
            batch = read_batch(paths[name])
            images.append(_images(batch, paths[name]))
            labels.append(_labels(batch, b"labels", paths[name], len(images[-1])))
        return split_from_numpy(np.concatenate(images), np.concatenate(labels))

    return read(CIFAR10_TRAIN_FILES), read(("test_batch",))


CIFAR10 = DatasetSpec(
    name="cifar10",
    num_classes=10,
    image_shape=CIFAR_IMAGE_SHAPE,
    class_names=CIFAR10_CLASSES,
    load=_load_cifar10,
    locate=_locate_cifar10,
    files=tuple(f"{CIFAR10_FOLDER}/{f}" for f in CIFAR10_FILES),
    downloads=(
        Download(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            extract=True,
        ),
    ),
    color=True,
    description="CIFAR-10: 32x32 colour images in 10 classes, 50000 train / 10000 test.",
)


# ---- CIFAR-100 ------------------------------------------------------------------------


def _locate_cifar100(root: Path) -> dict[str, Path]:
    return find_files("cifar100", root, [root / CIFAR100_FOLDER], CIFAR100_FILES)


def _load_cifar100(root: Path) -> tuple[ImageSplit, ImageSplit]:
    paths = _locate_cifar100(root)

    def read(name: str) -> ImageSplit:
        path = paths[name]
        batch = read_batch(path)
        images = _images(batch, path)
        fine = _labels(batch, b"fine_labels", path, len(images))
        coarse = _labels(batch, b"coarse_labels", path, len(images))
        return split_from_numpy(images, fine, {"coarse": coarse})

    return read("train"), read("test")


def _cifar100_fine_names(root: Path) -> tuple[str, ...] | None:
    """The 100 fine class names from ``meta``; None (keep placeholders) if the file is absent."""
    path = root / CIFAR100_FOLDER / "meta"
    if not path.is_file():
        return None
    return _decode_names(_field(read_batch(path), b"fine_label_names", path))


CIFAR100 = DatasetSpec(
    name="cifar100",
    num_classes=100,
    image_shape=CIFAR_IMAGE_SHAPE,
    # Placeholders until the real names are read from cifar-100-python/meta at load time.
    class_names=tuple(f"class_{i}" for i in range(100)),
    load=_load_cifar100,
    locate=_locate_cifar100,
    files=tuple(f"{CIFAR100_FOLDER}/{f}" for f in (*CIFAR100_FILES, "meta")),
    downloads=(
        Download(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            extract=True,
        ),
    ),
    color=True,
    description=(
        "CIFAR-100: 32x32 colour images in 100 fine classes (labels) grouped into 20 coarse "
        "superclasses (extra_labels['coarse']), 50000 train / 10000 test."
    ),
    read_class_names=_cifar100_fine_names,
)
