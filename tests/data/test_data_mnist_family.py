"""idx-ubyte parsing and the MNIST / KMNIST / Fashion-MNIST loaders on tiny files in the real format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from robustloss.data import DatasetFormatError, load_dataset
from robustloss.data.idx import read_idx

N_TRAIN, N_TEST = 6, 4


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding written independently of the reader: magic 0x0000 08 ndim, big-endian dims."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def write_set(folder: Path, gz: bool, seed: int = 0):
    arrays = make_arrays(seed)
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


def assert_matches(ds, arrays):
    assert ds.train.images.dtype == torch.uint8
    assert ds.train.images.shape == (N_TRAIN, 1, 28, 28)
    assert ds.test.images.shape == (N_TEST, 1, 28, 28)
    assert torch.equal(ds.train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert ds.train.labels.dtype == torch.int64
    assert ds.train.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    x, y = ds.train.batch(slice(0, N_TRAIN))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255.0
    assert torch.equal(x[:, 0], expected)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
@pytest.mark.parametrize(
    "name, subfolder",
    [
        ("mnist", "mnist"),  # where `robustloss data fetch` puts the files
        ("mnist", "MNIST/raw"),  # torchvision's layout
        ("mnist", "."),  # flat in the root
        ("kmnist", "kmnist"),
        ("kmnist", "KMNIST/raw"),
        ("fashion-mnist", "fashion-mnist"),
        ("fashion-mnist", "FashionMNIST/raw"),
    ],
)
def test_loads_every_layout(tmp_path, name, subfolder, gz):
    arrays = write_set(tmp_path / subfolder, gz)
    ds = load_dataset(name, data_dir=tmp_path)
    assert_matches(ds, arrays)
    assert ds.num_classes == 10 and ds.image_shape == (1, 28, 28)


def test_own_folder_is_preferred_over_torchvision_layout(tmp_path):
    ours = write_set(tmp_path / "mnist", gz=True, seed=1)
    write_set(tmp_path / "MNIST" / "raw", gz=False, seed=2)
    assert_matches(load_dataset("mnist", tmp_path), ours)


def test_files_are_not_mixed_across_folders(tmp_path):
    # A half-copied folder must not borrow the missing files from another folder.
    arrays = write_set(tmp_path / "MNIST" / "raw", gz=False, seed=3)
    write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte", make_arrays(4)["train-images-idx3-ubyte"], gz=False)
    assert_matches(load_dataset("mnist", tmp_path), arrays)


def test_class_names():
    from robustloss.data import DATASETS

    assert DATASETS.get("mnist").class_names == tuple("0123456789")
    assert DATASETS.get("kmnist").class_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert DATASETS.get("fashion-mnist").class_names[0] == "T-shirt/top"
    assert DATASETS.get("fashion-mnist").class_names[-1] == "Ankle boot"


# ---- idx header validation -------------------------------------------------------------


def test_read_idx_detects_gzip_by_content_not_suffix(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an idx file"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00\x00\x00\x00", "0x0d (float32)"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 1), "ends inside the idx header"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + b"\x00" * 5, "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x00" * 3, "holds 3 bytes"),
    ],
)
def test_bad_headers_give_clear_errors(tmp_path, raw, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DatasetFormatError, match="bad-idx3-ubyte") as info:
        read_idx(path)
    assert message in str(info.value)


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)))[:30])
    with pytest.raises(DatasetFormatError, match="gzip"):
        read_idx(path)


def test_image_label_count_mismatch(tmp_path):
    arrays = write_set(tmp_path / "mnist", gz=False)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", arrays["t10k-labels-idx1-ubyte"][:-1], gz=False)
    with pytest.raises(DatasetFormatError, match="labels"):
        load_dataset("mnist", tmp_path)


def test_wrong_image_size_is_rejected_against_spec(tmp_path):
    folder = tmp_path / "mnist"
    write_set(folder, gz=False)
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((N_TEST, 32, 32), np.uint8), gz=False)
    with pytest.raises(DatasetFormatError, match=r"\(1, 32, 32\).*\(1, 28, 28\)"):
        load_dataset("mnist", tmp_path)
