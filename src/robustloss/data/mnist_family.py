"""MNIST, KMNIST and Fashion-MNIST: 28x28 grey images in idx-ubyte files, 60k train / 10k test.

All three share one file layout, so one loader serves them. The files are looked for in
``<root>/<name>/`` (where ``robustloss data fetch`` puts them), then in torchvision's
``<root>/<TorchvisionName>/raw/`` (so an existing torchvision download is reused), then
directly in ``<root>``.

URLs and MD5s are the ones torchvision publishes (torchvision/datasets/mnist.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustloss.data.format_error import DatasetFormatError
from robustloss.data.from_numpy import split_from_numpy
from robustloss.data.idx import read_idx
from robustloss.data.locate import find_files
from robustloss.data.spec import DatasetSpec, Download
from robustloss.data.split import ImageSplit

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
KMNIST_MIRROR = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"


def idx_search_folders(root: Path, name: str, torchvision_name: str) -> list[Path]:
    return [root / name, root / torchvision_name / "raw", root]


def _downloads(mirror: str, md5s: tuple[str, str, str, str]) -> tuple[Download, ...]:
    return tuple(Download(f"{mirror}{f}.gz", f"{f}.gz", md5) for f, md5 in zip(IDX_FILES, md5s))


def _idx_locator(name: str, torchvision_name: str):
    def locate(root: Path) -> dict[str, Path]:
        folders = idx_search_folders(root, name, torchvision_name)
        return find_files(name, root, folders, IDX_FILES, gzip_allowed=True)

    return locate


def _idx_loader(name: str, torchvision_name: str):
    locate = _idx_locator(name, torchvision_name)

    def load(root: Path) -> tuple[ImageSplit, ImageSplit]:
        paths = locate(root)
        train = _read_pair(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
        test = _read_pair(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
        return train, test

    return load


def _read_pair(images_path: Path, labels_path: Path) -> ImageSplit:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DatasetFormatError(f"{images_path}: expected 3 dimensions (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise DatasetFormatError(f"{labels_path}: expected 1 dimension (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    return split_from_numpy(images[:, None, :, :], labels.astype(np.int64))


def _spec(name, torchvision_name, class_names, mirror, md5s, description) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        num_classes=10,
        image_shape=(1, 28, 28),
        class_names=tuple(class_names),
        load=_idx_loader(name, torchvision_name),
        locate=_idx_locator(name, torchvision_name),
        files=IDX_FILES,
        downloads=_downloads(mirror, md5s),
        description=description,
    )


MNIST = _spec(
    "mnist",
    "MNIST",
    [str(d) for d in range(10)],
    MNIST_MIRROR,
    (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
    "MNIST handwritten digits, 28x28 grey, 60000 train / 10000 test.",
)

KMNIST = _spec(
    "kmnist",
    "KMNIST",
    # Romanised names of the ten hiragana, in label order (as torchvision lists them).
    ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    KMNIST_MIRROR,
    (
        "bdb82020997e1d708af4cf47b453dcf7",
        "e144d726b3acfaa3e44228e80efcd344",
        "5c965bf0a639b31b8f53240b1b52f4d7",
        "7320c461ea6c1c855c0b718fb2a4b134",
    ),
    "Kuzushiji-MNIST: cursive Japanese hiragana, 28x28 grey, 60000 train / 10000 test.",
)

FASHION_MNIST = _spec(
    "fashion-mnist",
    "FashionMNIST",
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    FASHION_MNIST_MIRROR,
    (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
    "Fashion-MNIST: Zalando article images, 28x28 grey, 60000 train / 10000 test.",
)

MNIST_FAMILY = (MNIST, KMNIST, FASHION_MNIST)
