"""Datasets installed by the package manager (Debian: /usr/share/datasets/<name>/) are found after
the user's data root; the full Fashion-MNIST from ``dataset-fashion-mnist`` loads completely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustloss.cli import main
from robustloss.data import check_dataset_files, load_dataset
from robustloss.data.root import DEFAULT_SYSTEM_DATA, SYSTEM_DATA_ENV_VAR
from robustloss.errors import DatasetNotFoundError

from .test_data_mnist_family import assert_matches, write_set

DEBIAN_FMNIST = Path(DEFAULT_SYSTEM_DATA) / "fashion-mnist"


def test_system_folder_is_searched_after_the_data_root(tmp_path, monkeypatch):
    system, root = tmp_path / "system", tmp_path / "root"
    monkeypatch.setenv(SYSTEM_DATA_ENV_VAR, str(system))
    packaged = write_set(system / "fashion-mnist", gz=True, seed=1)
    assert_matches(load_dataset("fashion-mnist", root), packaged)
    assert check_dataset_files("fashion-mnist", root) == system / "fashion-mnist"
    # A copy under the user's root wins over the system's.
    own = write_set(root / "fashion-mnist", gz=False, seed=2)
    assert_matches(load_dataset("fashion-mnist", root), own)
    assert check_dataset_files("fashion-mnist", root) == root / "fashion-mnist"


def test_system_folder_keeps_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setenv(SYSTEM_DATA_ENV_VAR, str(tmp_path / "system"))
    arrays = write_set(tmp_path / "system" / "KMNIST" / "raw", gz=True)
    assert_matches(load_dataset("kmnist", tmp_path / "root"), arrays)


def test_missing_dataset_names_the_debian_package_and_every_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(SYSTEM_DATA_ENV_VAR, str(tmp_path / "system"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", tmp_path / "root")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "system" / "fashion-mnist") in message
    assert message.index(str(tmp_path / "root")) < message.index(str(tmp_path / "system"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("kmnist", tmp_path / "root")
    assert "apt-get" not in str(info.value)  # no package to name: only the fetch command


def test_data_list_shows_where_each_dataset_was_found(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(SYSTEM_DATA_ENV_VAR, str(tmp_path / "system"))
    write_set(tmp_path / "system" / "fashion-mnist", gz=True)
    write_set(tmp_path / "root" / "MNIST" / "raw", gz=False)
    assert main(["data", "list", "--data-dir", str(tmp_path / "root")]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["fashion-mnist"].endswith(f"on disk: {tmp_path / 'system' / 'fashion-mnist'}")
    assert rows["mnist"].endswith(f"on disk: {tmp_path / 'root' / 'MNIST' / 'raw'}")
    assert "missing" in rows["kmnist"] and "embedded" in rows["mnist-5k"]


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason=f"{DEBIAN_FMNIST} is absent "
                    "(apt-get install dataset-fashion-mnist provides it; .ci/run installs it where apt works)")
def test_full_fashion_mnist_from_the_debian_package(monkeypatch):
    monkeypatch.setenv(SYSTEM_DATA_ENV_VAR, DEFAULT_SYSTEM_DATA)
    ds = load_dataset("fashion-mnist", Path("/nonexistent-user-root"))
    assert len(ds.train) == 60_000 and len(ds.test) == 10_000
    assert ds.train.images.shape == (60_000, 1, 28, 28) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (10_000, 1, 28, 28)
    # Fashion-MNIST is exactly balanced: 6,000 train and 1,000 test images per class.
    assert np.bincount(ds.train.labels.numpy(), minlength=10).tolist() == [6_000] * 10
    assert np.bincount(ds.test.labels.numpy(), minlength=10).tolist() == [1_000] * 10
    x, _ = ds.test.batch(slice(0, 10_000))
    assert x.min().item() == 0.0 and x.max().item() == 1.0  # full 0..255 range, scaled to [0, 1]
    assert ds.spec.class_names[0] == "T-shirt/top" and ds.spec.class_names[9] == "Ankle boot"
