"""Tiny ImageNet loader on a small tree of real JPEGs in the published layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from robustloss.data import DatasetFormatError, load_dataset
from robustloss.data.tiny_imagenet import CACHE_FILE

N_CLASSES = 200


def wnid(i: int) -> str:
    return f"n{i:08d}"


def flat_image(rgb) -> Image.Image:
    # Flat colours survive JPEG compression almost exactly, so pixel values can be checked.
    return Image.new("RGB", (64, 64), tuple(rgb))


def write_tree(root: Path, train_per_class: int = 1) -> dict:
    tree = root / "tiny-imagenet-200"
    wnids = [wnid(i) for i in range(N_CLASSES)]
    tree.mkdir(parents=True)
    (tree / "wnids.txt").write_text("\n".join(wnids) + "\n")
    colours = {}
    for c, w in enumerate(wnids):
        folder = tree / "train" / w / "images"
        folder.mkdir(parents=True)
        for k in range(train_per_class):
            colour = (c, 255 - c, (40 * k) % 256)
            flat_image(colour).save(folder / f"{w}_{k}.JPEG", quality=95)
            colours[(w, k)] = colour
    (tree / "val" / "images").mkdir(parents=True)
    val = [("val_0.JPEG", 7, (200, 10, 10)), ("val_1.JPEG", 0, (10, 200, 10)), ("val_2.JPEG", 199, (10, 10, 200))]
    for name, c, colour in val:
        flat_image(colour).save(tree / "val" / "images" / name, quality=95)
    # A greyscale JPEG, as a few real files are: must come back as 3 equal channels.
    Image.new("L", (64, 64), 128).save(tree / "val" / "images" / "val_3.JPEG", quality=95)
    val.append(("val_3.JPEG", 3, (128, 128, 128)))
    (tree / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid(c)}\t0\t0\t63\t63\n" for name, c, _ in val)
    )
    return {"tree": tree, "wnids": wnids, "val": val, "colours": colours}


def assert_close(pixels: torch.Tensor, rgb) -> None:
    means = pixels.float().mean(dim=(1, 2))
    assert torch.allclose(means, torch.tensor(rgb, dtype=torch.float32), atol=2.0), (means, rgb)


def test_tiny_imagenet_tree(tmp_path):
    info = write_tree(tmp_path, train_per_class=2)
    ds = load_dataset("tiny-imagenet", tmp_path)
    assert ds.train.images.dtype == torch.uint8
    assert ds.train.images.shape == (2 * N_CLASSES, 3, 64, 64)
    assert ds.test.images.shape == (4, 3, 64, 64)
    # train: wnids.txt order, then file name order
    assert ds.train.labels.tolist() == [c for c in range(N_CLASSES) for _ in range(2)]
    assert_close(ds.train.images[2 * 5 + 1], info["colours"][(wnid(5), 1)])
    # test: annotation file order, labels from the wnid column
    assert ds.test.labels.tolist() == [c for _, c, _ in info["val"]]
    for i, (_, _, colour) in enumerate(info["val"]):
        assert_close(ds.test.images[i], colour)
    assert ds.class_names == tuple(info["wnids"])
    x, y = ds.test.batch(slice(None))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.dtype == torch.int64


def test_cache_is_written_reused_and_invalidated(tmp_path):
    info = write_tree(tmp_path)
    first = load_dataset("tiny-imagenet", tmp_path)
    cache = info["tree"] / CACHE_FILE
    assert cache.is_file()
    assert not [p for p in info["tree"].iterdir() if p.name.endswith(".part")]
    # Removing the JPEGs proves the second load comes from the cache.
    for p in (info["tree"] / "val" / "images").iterdir():
        p.write_bytes(b"")
    second = load_dataset("tiny-imagenet", tmp_path)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)
    # A different class list makes the cache stale: it is rebuilt from the (now broken) JPEGs.
    wnids = info["wnids"]
    (info["tree"] / "wnids.txt").write_text("\n".join([wnids[1], wnids[0], *wnids[2:]]))
    with pytest.raises(DatasetFormatError, match="val_0.JPEG"):
        load_dataset("tiny-imagenet", tmp_path)


def test_unknown_wnid_in_annotations(tmp_path):
    info = write_tree(tmp_path)
    with open(info["tree"] / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DatasetFormatError, match="val_annotations.txt:5"):
        load_dataset("tiny-imagenet", tmp_path)


def test_wrong_image_size(tmp_path):
    info = write_tree(tmp_path)
    Image.new("RGB", (32, 32)).save(info["tree"] / "val" / "images" / "val_1.JPEG")
    with pytest.raises(DatasetFormatError, match="expected 64x64"):
        load_dataset("tiny-imagenet", tmp_path)


def test_missing_tree_lists_expected_entries(tmp_path):
    from robustloss.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("tiny-imagenet", tmp_path)
    message = str(info.value)
    for entry in ("wnids.txt", "val/val_annotations.txt", "val/images/", "train/"):
        assert entry in message
    assert str(tmp_path / "tiny-imagenet-200") in message
    assert "robustloss data fetch tiny-imagenet" in message
