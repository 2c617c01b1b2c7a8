"""CIFAR-10 / CIFAR-100 loaders on tiny pickles written exactly like the published files."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from robustloss.data import DATASETS, DatasetFormatError, load_dataset
from robustloss.data.safe_pickle import load_numpy_pickle
from robustloss.errors import DatasetNotFoundError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Python2StylePickler(pickle._Pickler):
    """Writes pickles the way Python 2 + numpy 1 wrote the published CIFAR files.

    Python 2 ``str`` (dict keys, array buffers, dtype codes) is stored with the BINSTRING
    opcodes, which Python 3 reads back as bytes under ``encoding="bytes"``; numpy's module
    was ``numpy.core.multiarray``. Python 3's own protocol 2 differs (``_codecs.encode``).
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_python2_str
    dispatch[bytes] = save_python2_str


def python2_style_dumps(obj) -> bytes:
    buffer = io.BytesIO()
    Python2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(python2_style_dumps(obj))


def random_images(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def as_rows(images: np.ndarray) -> np.ndarray:
    # The published layout: each row is R plane, G plane, B plane, each 32x32 row-major.
    rows = np.empty((len(images), 3072), dtype=np.uint8)
    for i, img in enumerate(images):
        rows[i] = np.concatenate([img[0].ravel(), img[1].ravel(), img[2].ravel()])
    return rows


def write_cifar10(root: Path, per_batch: int = 3, n_test: int = 4):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    train_images, train_labels = [], []
    for i in range(1, 6):
        images, labels = random_images(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        write_pickle(
            folder / f"data_batch_{i}",
            {b"batch_label": b"training batch %d of 5" % i, b"labels": labels, b"data": as_rows(images),
             b"filenames": [b"f%d.png" % j for j in range(per_batch)]},
        )
        train_images.append(images)
        train_labels += labels
    test_images, test_labels = random_images(rng, n_test), rng.integers(0, 10, n_test).tolist()
    write_pickle(
        folder / "test_batch",
        {b"batch_label": b"testing batch 1 of 1", b"labels": test_labels, b"data": as_rows(test_images)},
    )
    write_pickle(
        folder / "batches.meta",
        {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": per_batch, b"num_vis": 3072},
    )
    return np.concatenate(train_images), train_labels, test_images, test_labels


def write_cifar100(root: Path, n_train: int = 7, n_test: int = 5):
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    splits = {}
    for name, n in (("train", n_train), ("test", n_test)):
        images = random_images(rng, n)
        fine = rng.integers(0, 100, n).tolist()
        coarse = rng.integers(0, 20, n).tolist()
        write_pickle(
            folder / name,
            {
                b"filenames": [b"x.png"] * n,
                b"batch_label": name.encode(),
                b"fine_labels": fine,
                b"coarse_labels": coarse,
                b"data": as_rows(images),
            },
        )
        splits[name] = (images, fine, coarse)
    fine_names = [f"fine{i:02d}".encode() for i in range(100)]
    coarse_names = [f"coarse{i}".encode() for i in range(20)]
    write_pickle(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    return splits


def test_cifar10_pixels_labels_and_names(tmp_path):
    train_images, train_labels, test_images, test_labels = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train.images.dtype == torch.uint8
    assert ds.train.images.shape == (15, 3, 32, 32) and ds.test.images.shape == (4, 3, 32, 32)
    assert torch.equal(ds.train.images, torch.from_numpy(train_images))
    assert torch.equal(ds.test.images, torch.from_numpy(test_images))
    assert ds.train.labels.dtype == torch.int64
    assert ds.train.labels.tolist() == train_labels and ds.test.labels.tolist() == test_labels
    x, _ = ds.test.batch(slice(None))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, torch.from_numpy(test_images).float() / 255)
    assert ds.class_names == tuple(CIFAR10_NAMES)
    assert ds.spec.color


def test_cifar10_channel_order_is_rgb_planes(tmp_path):
    # One image whose red plane is 10, green 20, blue 30: a wrong reshape would mix them.
    folder = tmp_path / "cifar-10-batches-py"
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)[None]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(folder / name, {b"labels": [3], b"data": row})
    ds = load_dataset("cifar10", tmp_path)
    assert ds.test.images[0, :, 5, 7].tolist() == [10, 20, 30]


def test_cifar100_fine_labels_coarse_extra_and_meta_names(tmp_path):
    splits = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    for split, (images, fine, coarse) in ((ds.train, splits["train"]), (ds.test, splits["test"])):
        assert torch.equal(split.images, torch.from_numpy(images))
        assert split.labels.tolist() == fine
        assert split.extra_labels["coarse"].dtype == torch.int64
        assert split.extra_labels["coarse"].tolist() == coarse
    assert ds.num_classes == 100
    assert ds.class_names[:2] == ("fine00", "fine01") and len(ds.class_names) == 100
    # subset keeps the coarse labels aligned
    sub = ds.train.subset(torch.tensor([2, 0]))
    assert sub.extra_labels["coarse"].tolist() == [splits["train"][2][2], splits["train"][2][0]]


def test_cifar100_without_meta_falls_back_to_placeholders(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    ds = load_dataset("cifar100", tmp_path)
    assert ds.class_names[0] == "class_0" and len(ds.class_names) == 100


def test_cifar_missing_batch_names_file_and_fetch_command(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", tmp_path)
    message = str(info.value)
    assert "data_batch_3" in message and "missing: data_batch_3" in message
    assert f"robustloss data fetch cifar10 --data-dir {tmp_path}" in message


def test_cifar_wrong_row_length_is_a_format_error(tmp_path):
    write_cifar10(tmp_path)
    bad = {b"labels": [1], b"data": np.zeros((1, 100), np.uint8)}
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", bad)
    with pytest.raises(DatasetFormatError, match="3072"):
        load_dataset("cifar10", tmp_path)


def test_cifar_label_out_of_range_is_rejected(tmp_path):
    write_cifar10(tmp_path)
    bad = {b"labels": [10], b"data": np.zeros((1, 3072), np.uint8)}
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", bad)
    with pytest.raises(DatasetFormatError, match="labels range"):
        load_dataset("cifar10", tmp_path)


# ---- the restricted unpickler ---------------------------------------------------------


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_pickle_that_calls_a_function_is_refused(tmp_path):
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {b"labels": [0], b"data": _RunsCode()})
    with pytest.raises(DatasetFormatError, match="refusing to load"):
        load_dataset("cifar10", tmp_path)


def test_codecs_encode_only_with_latin1():
    payload = pickle.dumps({b"k": b"\x00\xff"}, protocol=2)  # Python 3 writes bytes via _codecs.encode
    assert load_numpy_pickle(io.BytesIO(payload)) == {b"k": b"\x00\xff"}
    evil = payload.replace(b"latin1", b"zlib__")  # same length, another codec
    with pytest.raises(pickle.UnpicklingError, match="codec"):
        load_numpy_pickle(io.BytesIO(evil))


def test_numpy1_module_names_and_protocol5_arrays_load():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    # The published files name numpy.core.multiarray (numpy 1); numpy 2 writes numpy._core.
    old_style = pickle.dumps({b"data": array}, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old_style
    np.testing.assert_array_equal(load_numpy_pickle(io.BytesIO(old_style))[b"data"], array)
    np.testing.assert_array_equal(load_numpy_pickle(io.BytesIO(pickle.dumps(array, protocol=5))), array)
    assert load_numpy_pickle(io.BytesIO(pickle.dumps([np.int64(7)], protocol=2))) == [7]


def test_fixture_pickles_look_like_the_published_ones():
    raw = python2_style_dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]})
    ops = list(pickletools.genops(raw))
    assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} == {
        "numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"
    }
    assert not {op.name for op, _, _ in ops} & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}


def test_python2_style_str_data_loads_as_bytes():
    # Python 2 pickled str with SHORT_BINSTRING; encoding="bytes" must keep it as bytes.
    payload = b"\x80\x02}q\x00U\x04dataq\x01U\x03abcq\x02s."
    assert load_numpy_pickle(io.BytesIO(payload)) == {b"data": b"abc"}


def test_registry_entries():
    assert DATASETS.get("cifar10").image_shape == (3, 32, 32)
    assert DATASETS.get("cifar100").num_classes == 100
