"""Shared fixtures: a small real-data LeNet-5 trained once per test session."""

from __future__ import annotations

import os

import pytest
import torch

from robustloss.data import load_dataset
from robustloss.models import create_model
from robustloss.train import Phase, TrainConfig, train

torch.set_num_threads(2)

# Tests see only the data they write: a dataset the machine has under /usr/share/datasets (e.g.
# Debian's dataset-fashion-mnist) must not turn a "missing dataset" test into a 70k-image load.
# Subprocesses inherit this; tests of the system folder set it themselves.
os.environ["ROBUSTLOSS_SYSTEM_DATA"] = ""


@pytest.fixture(scope="session")
def mnist5k():
    return load_dataset("mnist-5k")


@pytest.fixture(scope="session")
def trained_lenet(mnist5k, tmp_path_factory):
    """LeNet-5 trained with CE for 3 epochs on mnist-5k (~96% test accuracy, a few seconds)."""
    config = TrainConfig(recipe=[Phase("ce", 3)], seed=0)
    result = train(config, tmp_path_factory.mktemp("lenet"), data=mnist5k, progress=False, log=lambda _: None,
                   device="cpu")
    return result.model.eval()


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return create_model("lenet5").eval()


@pytest.fixture(scope="session")
def cnn3_substitute(mnist5k, tmp_path_factory):
    """Run directory of a cnn3 substitute trained 2 epochs on mnist-5k (for transfer attacks)."""
    run = tmp_path_factory.mktemp("substitute") / "cnn3"
    train(TrainConfig(model="cnn3", recipe=[Phase("ce", 2)], seed=1), run, data=mnist5k, progress=False,
          log=lambda _: None, device="cpu")
    return run
