"""Tiny ImageNet (CS231n): 64x64 colour images of 200 ImageNet classes, 100000 train / 10000 test.

Layout of the official zip, unpacked by ``robustloss data fetch`` to ``<root>/tiny-imagenet-200/``:

    wnids.txt                        the 200 WordNet ids; line order defines label order
    train/<wnid>/images/*.JPEG       500 per class
    val/images/*.JPEG                10000 images ...
    val/val_annotations.txt          ... labelled here: filename <TAB> wnid <TAB> bounding box

The official test folder has no labels, so the labelled ``val`` split is our test split.
Train images are ordered by wnids.txt, then by file name; test images in annotation-file
order. A few images are greyscale JPEGs; ``convert("RGB")`` makes every image 3-channel.

Decoding 110000 JPEGs takes a minute or two, so after the first load the arrays are saved
to ``tiny-imagenet-200/robustloss-cache-v1.npz`` (about 1.3 GB, uncompressed so it loads
fast). The cache is written atomically and rebuilt if wnids.txt no longer matches it; if
the folder is read-only the cache is skipped with a warning. Delete the file to force a
re-read of the JPEGs.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from robustloss.data.format_error import DatasetFormatError
from robustloss.data.from_numpy import split_from_numpy
from robustloss.data.locate import find_files
from robustloss.errors import DatasetNotFoundError
from robustloss.data.spec import DatasetSpec, Download
from robustloss.data.split import ImageSplit

TREE = "tiny-imagenet-200"
NUM_CLASSES = 200
IMAGE_SIZE = 64
EXPECTED = ("wnids.txt", "train/", "val/images/", "val/val_annotations.txt")
CACHE_FILE = "robustloss-cache-v1.npz"  # bump the version when the array layout changes
CACHE_KEYS = ("wnids", "train_images", "train_labels", "test_images", "test_labels")


def read_wnids(tree: Path) -> tuple[str, ...]:
    path = tree / "wnids.txt"
    wnids = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(set(wnids)) != len(wnids):
        raise DatasetFormatError(f"{path}: lists some wnids twice")
    return wnids


def _train_files(tree: Path, wnids: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        folder = tree / "train" / wnid / "images"
        if not folder.is_dir():
            raise DatasetFormatError(f"{folder}: missing (wnids.txt lists {wnid}); the tree is incomplete")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpeg")
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _test_files(tree: Path, wnids: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    annotations = tree / "val" / "val_annotations.txt"
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise DatasetFormatError(
                f"{annotations}:{line_no}: expected 'filename<TAB>wnid<TAB>...' with a wnid from "
                f"wnids.txt, got {line!r}"
            )
        paths.append(tree / "val" / "images" / fields[0])
        labels.append(label_of[fields[1]])
    return paths, labels


def _read_jpegs(paths: list[Path]) -> np.ndarray:
    from PIL import Image

    images = np.empty((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)

    def read(i: int) -> None:
        try:
            with Image.open(paths[i]) as im:
                pixels = np.asarray(im.convert("RGB"))
        except OSError as err:  # missing, truncated or not an image
            raise DatasetFormatError(f"{paths[i]}: cannot read image ({err})") from None
        if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise DatasetFormatError(f"{paths[i]}: expected {IMAGE_SIZE}x{IMAGE_SIZE}, got {pixels.shape[:2]}")
        images[i] = pixels.transpose(2, 0, 1)

    # Threads help because Pillow releases the GIL while decoding.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(read, range(len(paths))):
            pass
    return images


def _read_tree(tree: Path, wnids: tuple[str, ...]) -> dict[str, np.ndarray]:
    train_paths, train_labels = _train_files(tree, wnids)
    test_paths, test_labels = _test_files(tree, wnids)
    return {
        "wnids": np.asarray(wnids),
        "train_images": _read_jpegs(train_paths),
        "train_labels": np.asarray(train_labels, dtype=np.int64),
        "test_images": _read_jpegs(test_paths),
        "test_labels": np.asarray(test_labels, dtype=np.int64),
    }


def _load_cache(path: Path, wnids: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in CACHE_KEYS}
    except (OSError, ValueError, KeyError, EOFError):
        return None  # damaged or from another layout: rebuild from the JPEGs
    if tuple(str(w) for w in arrays["wnids"]) != wnids:
        return None
    return arrays


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temp file in the same folder and rename, so a reader never sees half a cache."""
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False) as f:
            tmp_name = f.name
            np.savez(f, **arrays)  # a file object, so numpy does not append another ".npz"
        os.chmod(tmp_name, 0o644)  # NamedTemporaryFile creates 0600; others may share the data folder
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as err:
        warnings.warn(f"could not write the Tiny ImageNet cache {path} ({err}); loading will stay slow")
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.remove(tmp_name)


def _locate_tiny_imagenet(root: Path) -> dict[str, Path]:
    return find_files("tiny-imagenet", root, [root / TREE], EXPECTED, copy_to=root / TREE)


def _load_tiny_imagenet(root: Path) -> tuple[ImageSplit, ImageSplit]:
    tree = _locate_tiny_imagenet(root)["wnids.txt"].parent  # the user's tree or a system copy
    wnids = read_wnids(tree)
    cache = tree / CACHE_FILE
    arrays = _load_cache(cache, wnids)
    if arrays is None:
        arrays = _read_tree(tree, wnids)
        _save_cache(cache, arrays)
    return (
        split_from_numpy(arrays["train_images"], arrays["train_labels"]),
        split_from_numpy(arrays["test_images"], arrays["test_labels"]),
    )


def _tiny_imagenet_wnids(root: Path) -> tuple[str, ...] | None:
    try:
        return read_wnids(_locate_tiny_imagenet(root)["wnids.txt"].parent)
    except DatasetNotFoundError:
        return None


TINY_IMAGENET = DatasetSpec(
    name="tiny-imagenet",
    num_classes=NUM_CLASSES,
    image_shape=(3, IMAGE_SIZE, IMAGE_SIZE),
    # Placeholders until the wnids are read from tiny-imagenet-200/wnids.txt at load time.
    class_names=tuple(f"class_{i}" for i in range(NUM_CLASSES)),
    load=_load_tiny_imagenet,
    locate=_locate_tiny_imagenet,
    files=tuple(f"{TREE}/{f}" for f in EXPECTED),
    downloads=(
        Download(
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            "tiny-imagenet-200.zip",
            "90528d7ca1a48142e341f4ef8d21d0de",
            extract=True,
        ),
    ),
    color=True,
    description=(
        "Tiny ImageNet: 64x64 colour images of 200 classes (WordNet ids), 100000 train / 10000 "
        "test (the labelled val split). First load decodes the JPEGs and caches a .npz next to them."
    ),
    read_class_names=_tiny_imagenet_wnids,
)
