"""The dataset registry and ``load_dataset``, the one entry point the rest of the package uses."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from robustloss.data.cifar import CIFAR10, CIFAR100
from robustloss.data.embedded import EMBEDDED
from robustloss.data.mnist_family import MNIST_FAMILY
from robustloss.data.root import data_root
from robustloss.data.spec import Dataset, DatasetSpec
from robustloss.data.svhn import SVHN
from robustloss.data.tiny_imagenet import TINY_IMAGENET
from robustloss.data.validate import validate_class_names, validate_split
from robustloss.registry import Registry

# The registry holds spec objects (not factories): DATASETS.get(name) is the spec itself.
DATASETS: Registry[DatasetSpec] = Registry("dataset")
for _spec in (*MNIST_FAMILY, CIFAR10, CIFAR100, SVHN, TINY_IMAGENET, *EMBEDDED):
    DATASETS.register(_spec.name)(_spec)


def check_dataset_files(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder holding ``name``'s files (None for an embedded dataset); raises
    DatasetNotFoundError (same message as ``load_dataset``) when they are not on disk.
    Reads nothing, so it is instant even for Tiny ImageNet."""
    spec = DATASETS.get(name)
    if spec.locate is None:
        return None
    paths = [Path(p) for p in spec.locate(data_root(data_dir)).values()]
    return Path(os.path.commonpath([p if p.is_dir() else p.parent for p in paths]))


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load ``name`` from the data root (see ``data_root``); embedded datasets ignore it.

    Raises UnknownNameError for an unregistered name, DatasetNotFoundError (listing files,
    folders searched and the fetch command) when files are missing, and DatasetFormatError
    when files are damaged or do not match the spec.
    """
    spec = DATASETS.get(name)
    root = data_root(data_dir)
    train, test = spec.load(root)
    if spec.read_class_names is not None:
        names = spec.read_class_names(root)
        if names is not None:
            spec = dataclasses.replace(spec, class_names=tuple(names))
    validate_class_names(spec)
    validate_split(spec, "train", train)
    validate_split(spec, "test", test)
    return Dataset(spec, train, test)
