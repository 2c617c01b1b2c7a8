"""Checks that a loaded dataset matches what its spec promises, before any training starts.

A file that parses but holds the wrong thing (a CIFAR-100 batch in the CIFAR-10 folder, an
EMNIST file named like MNIST) would otherwise surface as a shape error deep inside a model,
or worse as silently wrong labels.
"""

from __future__ import annotations

from robustloss.data.format_error import DatasetFormatError
from robustloss.data.spec import DatasetSpec
from robustloss.data.split import ImageSplit


def validate_split(spec: DatasetSpec, split_name: str, split: ImageSplit) -> None:
    where = f"dataset {spec.name!r}, {split_name} split"
    if len(split) == 0:
        raise DatasetFormatError(f"{where}: no samples")
    shape = tuple(split.images.shape[1:])
    if shape != tuple(spec.image_shape):
        raise DatasetFormatError(f"{where}: images are {shape} (C, H, W) but the dataset is {tuple(spec.image_shape)}")
    low, high = int(split.labels.min()), int(split.labels.max())
    if low < 0 or high >= spec.num_classes:
        raise DatasetFormatError(
            f"{where}: labels range over {low}..{high} but the dataset has {spec.num_classes} classes "
            f"(0..{spec.num_classes - 1})"
        )
    for key, extra in split.extra_labels.items():
        if len(extra) != len(split):
            raise DatasetFormatError(f"{where}: {len(split)} samples but {len(extra)} {key!r} labels")


def validate_class_names(spec: DatasetSpec) -> None:
    if len(spec.class_names) != spec.num_classes:
        raise DatasetFormatError(
            f"dataset {spec.name!r}: {len(spec.class_names)} class names for {spec.num_classes} classes"
        )
