"""Registry contents, class names, unknown names and the "dataset not found" message."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robustloss.data import DATASETS, Dataset, DatasetFormatError, ImageSplit, load_dataset
from robustloss.data.locate import fetch_command
from robustloss.errors import DatasetNotFoundError, UnknownNameError

FILE_DATASETS = ["mnist", "kmnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet"]


def test_registry_names():
    assert set(DATASETS.names()) == {*FILE_DATASETS, "mnist-5k", "digits"}


@pytest.mark.parametrize("name", sorted({*FILE_DATASETS, "mnist-5k", "digits"}))
def test_spec_is_consistent(name):
    spec = DATASETS.get(name)
    assert spec.name == name
    assert len(spec.class_names) == spec.num_classes
    assert len(spec.image_shape) == 3
    assert spec.description
    if not spec.embedded:
        assert spec.downloads and spec.files
        for item in spec.downloads:
            assert item.url.endswith(item.filename)
            assert len(item.md5) == 32 and int(item.md5, 16) >= 0


def test_canonical_urls_and_checksums():
    # Same as torchvision/datasets/{mnist,cifar,svhn}.py
    md5 = {d.url: d.md5 for spec in map(DATASETS.get, FILE_DATASETS) for d in spec.downloads}
    mnist = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert md5[mnist + "train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert md5[mnist + "train-labels-idx1-ubyte.gz"] == "d53e105ee54ea40749a09fcbcd1e9432"
    assert md5[mnist + "t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"
    assert md5[mnist + "t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert md5["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"
    assert md5["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"] == "eb9058c3a382ffc7106e4002c42a8d85"
    assert md5["http://ufldl.stanford.edu/housenumbers/train_32x32.mat"] == "e26dedcc434d2e4c54c9b2d4a06d8373"
    assert md5["http://ufldl.stanford.edu/housenumbers/test_32x32.mat"] == "eb5a983be6a315427106f1b164d9cef3"
    assert md5["http://cs231n.stanford.edu/tiny-imagenet-200.zip"] == "90528d7ca1a48142e341f4ef8d21d0de"
    assert any(u.startswith("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/") for u in md5)
    assert any(u.startswith("http://codh.rois.ac.jp/kmnist/dataset/kmnist/") for u in md5)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        load_dataset("imagenet")
    for name in DATASETS.names():
        assert name in str(info.value)


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_missing_dataset_message(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, data_dir=tmp_path)
    message = str(info.value)
    assert fetch_command(name, tmp_path) in message
    assert f"robustloss data fetch {name} --data-dir {tmp_path}" in message
    assert "ROBUSTLOSS_DATA" in message
    assert str(tmp_path) in message


def test_missing_mnist_names_every_file_and_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert f in message and f + ".gz" in message
    for folder in (tmp_path / "mnist", tmp_path / "MNIST" / "raw", tmp_path):
        assert f"  {folder}\n" in message


def test_missing_cifar100_and_svhn_name_files_and_folders(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", data_dir=tmp_path)
    assert "train" in str(info.value) and str(tmp_path / "cifar-100-python") in str(info.value)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("svhn", data_dir=tmp_path)
    message = str(info.value)
    assert "train_32x32.mat" in message and "test_32x32.mat" in message
    assert f"  {tmp_path / 'svhn'}\n" in message and f"  {tmp_path}\n" in message


def test_fetch_command_quotes_paths_with_spaces(tmp_path):
    expected = f"robustloss data fetch mnist --data-dir '{tmp_path / 'my data'}'"
    assert fetch_command("mnist", tmp_path / "my data") == expected


def _fake_spec(images: torch.Tensor, labels: torch.Tensor):
    split = ImageSplit(images, labels)
    return dataclasses.replace(DATASETS.get("mnist"), load=lambda root: (split, split))


def test_shape_mismatch_against_spec(monkeypatch):
    spec = _fake_spec(torch.zeros(2, 3, 28, 28, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    monkeypatch.setitem(DATASETS._entries, "mnist", spec)
    with pytest.raises(DatasetFormatError, match=r"images are \(3, 28, 28\).*\(1, 28, 28\)"):
        load_dataset("mnist")


def test_returns_dataset_with_spec(monkeypatch):
    spec = _fake_spec(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 9]))
    monkeypatch.setitem(DATASETS._entries, "mnist", spec)
    ds = load_dataset("mnist")
    assert isinstance(ds, Dataset) and ds.name == "mnist" and ds.num_classes == 10


def test_wrong_number_of_class_names_from_files(monkeypatch, tmp_path):
    spec = _fake_spec(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 9]))
    spec = dataclasses.replace(spec, read_class_names=lambda root: ("a", "b"))
    monkeypatch.setitem(DATASETS._entries, "mnist", spec)
    with pytest.raises(DatasetFormatError, match="2 class names for 10 classes"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_check_dataset_files_reports_missing_like_load(tmp_path, name):
    from robustloss.data import check_dataset_files

    with pytest.raises(DatasetNotFoundError) as checked:
        check_dataset_files(name, tmp_path)
    with pytest.raises(DatasetNotFoundError) as loaded:
        load_dataset(name, tmp_path)
    assert str(checked.value) == str(loaded.value)


def test_check_dataset_files_reads_nothing(tmp_path):
    from robustloss.data import check_dataset_files

    # Empty files with the right names: present, though they would not parse.
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).touch()
    check_dataset_files("cifar10", tmp_path)
    check_dataset_files("mnist-5k", tmp_path)  # embedded: always present
    with pytest.raises(DatasetFormatError):
        load_dataset("cifar10", tmp_path)
