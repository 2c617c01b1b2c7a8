"""Training: seeded determinism, exact resume, NaN handling, safe run directories."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from robustloss.checkpoint import safe_load
from robustloss.data.spec import Dataset
from robustloss.errors import CheckpointError, NonFiniteLossError
from robustloss.losses import LOSSES
from robustloss.losses.base import Loss
from robustloss.models.saved import load_model
from robustloss.train import AdversarialConfig, OptimizerConfig, Phase, TrainConfig, train

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


@pytest.fixture(scope="module")
def small(mnist5k):
    """600 training digits: 3 steps per epoch at batch 256."""
    return Dataset(mnist5k.spec, mnist5k.train.subset(slice(0, 600)), mnist5k.test.subset(slice(0, 200)))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_weights(small, tmp_path):
    config = TrainConfig(recipe=[Phase("ce", 1), Phase("pc", 1)], seed=3)
    a = train(config, tmp_path / "a", data=small, **QUIET)
    b = train(config, tmp_path / "b", data=small, **QUIET)
    c = train(TrainConfig(recipe=[Phase("ce", 1), Phase("pc", 1)], seed=4), tmp_path / "c", data=small, **QUIET)
    assert same_weights(weights(a.model), weights(b.model))
    assert not same_weights(weights(a.model), weights(c.model))


def test_training_learns_and_records_history(small, tmp_path):
    result = train(TrainConfig(recipe=[Phase("ce", 3)]), tmp_path / "run", data=small, **QUIET)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.history[-1]["test_acc"] > 0.3  # chance is 0.1; 600 digits x 3 epochs
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 4
    assert (tmp_path / "run" / "config.yaml").exists()


def test_resume_after_interruption_matches_uninterrupted_run(small, tmp_path):
    config = TrainConfig(recipe=[Phase("ce", 2), Phase("pc", 2)], seed=1,
                         optimizer=OptimizerConfig(milestones=[3]))
    straight = train(config, tmp_path / "straight", data=small, **QUIET)

    def die_in_epoch_3(message):
        if "epoch 3/4" in message:
            raise KeyboardInterrupt  # after epoch 2 was checkpointed, before epoch 3's
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", data=small, progress=False, device="cpu", log=die_in_epoch_3)
    assert safe_load(tmp_path / "killed" / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = train(config, tmp_path / "killed", data=small, resume=True, **QUIET)
    assert same_weights(weights(straight.model), weights(resumed.model))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


def test_resume_with_adversarial_training_matches_uninterrupted_run(small, tmp_path):
    """Per-example eps, random targets and random starts are all drawn from the checkpointed
    generator, so killing and resuming an AT run changes nothing."""
    adversarial = AdversarialConfig(method="pgd", eps=[0.0, 0.1], steps=2, targeted=True, ratio=0.5)
    config = TrainConfig(recipe=[Phase("ce", 1), Phase("pc", 2)], seed=1, adversarial=adversarial)
    straight = train(config, tmp_path / "straight", data=small, **QUIET)

    def die_in_epoch_3(message):
        if "epoch 3/3" in message:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", data=small, progress=False, device="cpu", log=die_in_epoch_3)
    assert safe_load(tmp_path / "killed" / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = train(config, tmp_path / "killed", data=small, resume=True, **QUIET)
    assert same_weights(weights(straight.model), weights(resumed.model))
    assert [r["adv_fraction"] for r in resumed.history] == [0.5, 0.5, 0.5]
    clean = train(dataclasses.replace(config, adversarial=None), tmp_path / "clean", data=small, **QUIET)
    assert not same_weights(weights(straight.model), weights(clean.model))  # AT did change training


def test_nan_loss_stops_and_keeps_last_good_checkpoint(small, tmp_path, monkeypatch):
    class ExplodesInEpochTwo(Loss):
        calls = 0

        def per_sample(self, logits, labels, features=None):
            type(self).calls += 1
            value = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            return value * float("nan") if type(self).calls > 4 else value

    monkeypatch.setitem(LOSSES._entries, "explodes", ExplodesInEpochTwo)
    config = TrainConfig(recipe=[Phase("explodes", 3)])
    with pytest.raises(NonFiniteLossError, match=r"loss became nan.*last good checkpoint is kept"):
        train(config, tmp_path / "run", data=small, **QUIET)
    state = safe_load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert not (tmp_path / "run" / "model.pt").exists()


def test_existing_run_is_not_overwritten(small, tmp_path):
    config = TrainConfig(recipe=[Phase("ce", 1)])
    train(config, tmp_path / "run", data=small, **QUIET)
    with pytest.raises(CheckpointError, match="--resume"):
        train(config, tmp_path / "run", data=small, **QUIET)
    with pytest.raises(CheckpointError, match="differs in seed"):
        train(TrainConfig(recipe=[Phase("ce", 1)], seed=9), tmp_path / "run", data=small, resume=True, **QUIET)


def test_saved_model_predicts_identically(small, tmp_path):
    result = train(TrainConfig(recipe=[Phase("ce", 1)]), tmp_path / "run", data=small, **QUIET)
    loaded, spec, payload = load_model(tmp_path / "run" / "model.pt")
    x = small.test.x
    assert torch.equal(result.model(x), loaded(x))
    assert spec.name == "lenet5" and payload["config"]["recipe"] == [{"loss": "ce", "epochs": 1, "params": {}}]


def test_checkpoints_refuse_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot load"):
        safe_load(tmp_path / "evil.pt")


def test_sigkilled_cli_run_resumes_to_the_same_weights(tmp_path):
    """A real kill -9 in the middle of training, then `--resume`, equals an uninterrupted run."""
    args = [sys.executable, "-m", "robustloss.cli", "train", "--dataset", "mnist-5k", "--recipe", "ce:2,pc:4",
            "--device", "cpu", "--no-progress"]
    subprocess.run(args + ["--out", str(tmp_path / "straight")], check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists()
    epoch = safe_load(checkpoint)["epoch"]
    assert 1 <= epoch <= 6
    subprocess.run(args + ["--out", str(killed), "--resume"], check=True, capture_output=True)
    a = load_model(tmp_path / "straight" / "model.pt")[0].state_dict()
    b = load_model(killed / "model.pt")[0].state_dict()
    assert same_weights(a, b)
