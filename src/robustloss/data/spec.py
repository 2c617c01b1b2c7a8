"""What the registry knows about a dataset, and the loaded dataset object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robustloss.data.split import ImageSplit


@dataclass(frozen=True)
class Download:
    url: str  # canonical source
    filename: str  # name on disk under the dataset folder
    md5: str  # published checksum
    extract: bool = False  # archives (tar.gz / zip) are unpacked after verification


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    class_names: tuple[str, ...]
    # root folder -> (train, test). Raises DatasetNotFoundError when files are missing.
    load: Callable[[Path], tuple[ImageSplit, ImageSplit]]
    files: tuple[str, ...] = ()  # files expected on disk (for error messages)
    downloads: tuple[Download, ...] = ()
    embedded: bool = False  # ships inside a Python package; needs no data folder
    color: bool = False  # colour datasets get random crop + flip augmentation by default
    description: str = ""
    # Some class lists live in the data files (CIFAR-100 ``meta``, Tiny ImageNet ``wnids.txt``)
    # rather than in code. When set, ``load_dataset`` calls it with the data root and, when it
    # returns names, uses them in place of the placeholder ``class_names`` above.
    read_class_names: Callable[[Path], tuple[str, ...] | None] | None = None
    # Finds the files without reading them (raises DatasetNotFoundError like ``load``), so that
    # "is it on disk?" is cheap even for Tiny ImageNet. None for embedded datasets.
    locate: Callable[[Path], object] | None = None


@dataclass
class Dataset:
    spec: DatasetSpec
    train: ImageSplit
    test: ImageSplit

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.spec.image_shape

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names
