"""SVHN loader on tiny .mat files in the published layout (X: HxWxCxN uint8, y: Nx1, 10 = digit 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from robustloss.data import DatasetFormatError, load_dataset


def write_mat(path: Path, n: int, labels: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": x, "y": np.asarray(labels, dtype=np.uint8).reshape(n, 1)})
    return x


@pytest.mark.parametrize("subfolder", ["svhn", "."])
def test_svhn_pixels_and_label_10_becomes_0(tmp_path, subfolder):
    folder = tmp_path / subfolder
    x_train = write_mat(folder / "train_32x32.mat", 4, [10, 1, 9, 10], seed=0)
    x_test = write_mat(folder / "test_32x32.mat", 3, [5, 10, 2], seed=1)
    ds = load_dataset("svhn", tmp_path)
    assert ds.train.images.dtype == torch.uint8
    assert ds.train.images.shape == (4, 3, 32, 32) and ds.test.images.shape == (3, 3, 32, 32)
    assert ds.train.labels.tolist() == [0, 1, 9, 0]
    assert ds.test.labels.tolist() == [5, 0, 2]
    assert ds.train.labels.dtype == torch.int64
    # image n, channel c, row h, column w == X[h, w, c, n]
    assert torch.equal(ds.train.images, torch.from_numpy(x_train.transpose(3, 2, 0, 1).copy()))
    assert torch.equal(ds.test.images, torch.from_numpy(x_test.transpose(3, 2, 0, 1).copy()))
    assert int(ds.train.images[2, 1, 3, 7]) == int(x_train[3, 7, 1, 2])
    x, _ = ds.train.batch(slice(None))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert ds.class_names == tuple("0123456789")


def test_svhn_missing_test_file(tmp_path):
    from robustloss.errors import DatasetNotFoundError

    write_mat(tmp_path / "svhn" / "train_32x32.mat", 2, [1, 2], seed=0)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("svhn", tmp_path)
    message = str(info.value)
    assert "test_32x32.mat" in message and str(tmp_path / "svhn") in message
    assert "robustloss data fetch svhn" in message


def test_svhn_wrong_image_layout(tmp_path):
    folder = tmp_path / "svhn"
    write_mat(folder / "train_32x32.mat", 2, [1, 2], seed=0)
    nchw = {"X": np.zeros((2, 3, 32, 32), np.uint8), "y": np.ones((2, 1), np.uint8)}
    scipy.io.savemat(str(folder / "test_32x32.mat"), nchw)
    with pytest.raises(DatasetFormatError, match=r"\(32, 32, 3, N\)"):
        load_dataset("svhn", tmp_path)


def test_svhn_not_a_mat_file(tmp_path):
    folder = tmp_path / "svhn"
    write_mat(folder / "train_32x32.mat", 2, [1, 2], seed=0)
    (folder / "test_32x32.mat").write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DatasetFormatError, match="test_32x32.mat"):
        load_dataset("svhn", tmp_path)
