"""The trainer's hooks: on_epoch, TensorBoard scalars, max_train_samples, AT bookkeeping."""

from __future__ import annotations

import csv
import sys

import pytest
import torch
import yaml

from robustloss.checkpoint import safe_load
from robustloss.data.spec import Dataset
from robustloss.train import AdversarialConfig, Phase, TrainConfig, is_complete, train
from robustloss.train import trainer as trainer_module
from robustloss.train.tensorboard import ScalarWriter, open_scalar_writer
from robustloss.data.stratified import stratified_indices

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


@pytest.fixture(scope="module")
def small(mnist5k):
    """600 training digits: batches of 256, 256 and 88."""
    return Dataset(mnist5k.spec, mnist5k.train.subset(slice(0, 600)), mnist5k.test.subset(slice(0, 200)))


def test_on_epoch_sees_each_row_after_its_checkpoint_is_written(small, tmp_path):
    calls = []

    def on_epoch(row, checkpoint):
        assert checkpoint.exists() and safe_load(checkpoint)["epoch"] == row["epoch"]
        calls.append((row, checkpoint))

    result = train(TrainConfig(recipe=[Phase("ce", 1), Phase("pc", 1)]), tmp_path / "run", data=small,
                   on_epoch=on_epoch, **QUIET)
    assert [row["epoch"] for row, _ in calls] == [1, 2]
    assert [row for row, _ in calls] == result.history
    assert calls[0][1] == tmp_path / "run" / "checkpoints" / "last.pt"


def test_tensorboard_missing_is_skipped_with_an_install_hint(small, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    lines = []
    result = train(TrainConfig(recipe=[Phase("ce", 1)]), tmp_path / "run", data=small, progress=False,
                   device="cpu", log=lines.append, tensorboard=tmp_path / "tb")
    skipped = [line for line in lines if "tensorboard" in line]
    assert len(skipped) == 1 and "pip install tensorboard" in skipped[0]
    assert len(result.history) == 1 and not (tmp_path / "tb").exists()


def test_scalar_writer_writes_each_scalar_at_the_epoch_step():
    class FakeSummary:
        def __init__(self):
            self.scalars, self.closed = [], False

        def add_scalar(self, tag, value, global_step):
            self.scalars.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            self.closed = True

    summary = FakeSummary()
    with ScalarWriter(summary) as writer:
        writer.write({"epoch": 3, "phase": "ce", "lr": 0.01, "train_loss": 0.5, "train_acc": 0.8, "test_acc": 0.7,
                      "seconds": 1.5})
    assert sorted(summary.scalars) == sorted([("train_loss", 0.5, 3), ("train_acc", 0.8, 3), ("test_acc", 0.7, 3),
                                              ("lr", 0.01, 3), ("seconds", 1.5, 3)])
    assert summary.closed
    assert not open_scalar_writer(None).active


def test_tensorboard_event_files_are_written_when_installed(small, tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    train(TrainConfig(recipe=[Phase("ce", 2)]), tmp_path / "run", data=small, tensorboard=tmp_path / "tb", **QUIET)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_stratified_indices_keep_class_proportions_and_take_the_first_of_each_class():
    labels = torch.tensor([0, 1, 0, 0, 2, 1, 0, 0, 1, 0])  # six 0s, three 1s, one 2
    index = stratified_indices(labels, 5)
    # quotas 6*5/10 = 3, 3*5/10 = 1.5, 1*5/10 = 0.5: the spare sample goes to the lower class of the tie
    assert index.tolist() == [0, 1, 2, 3, 5]
    assert stratified_indices(labels, 10).tolist() == list(range(10))
    assert stratified_indices(labels, 99).tolist() == list(range(10))


def test_max_train_samples_trains_on_a_balanced_subset(mnist5k, small, tmp_path, monkeypatch):
    index = stratified_indices(mnist5k.train.labels, 1000)
    assert mnist5k.train.labels[index].bincount().tolist() == [100] * 10  # mnist-5k is balanced: 400 a class

    seen = []
    real_epoch = trainer_module.train_one_epoch
    monkeypatch.setattr(trainer_module, "train_one_epoch",
                        lambda model, loss_fn, split, *a, **k: seen.append(split.labels) or real_epoch(
                            model, loss_fn, split, *a, **k))
    lines = []
    train(TrainConfig(recipe=[Phase("ce", 1)], max_train_samples=300), tmp_path / "run", data=small,
          progress=False, device="cpu", log=lines.append)
    counts = small.train.labels.bincount()
    assert len(seen[0]) == 300
    assert (seen[0].bincount() - counts / 2).abs().max() <= 1  # half of each class, up to rounding
    assert any("300 of 600" in line for line in lines)


def test_adversarial_phases_are_recorded_per_epoch(small, tmp_path):
    config = TrainConfig(recipe=[Phase("ce", 1), Phase("pc", 1)], seed=2,
                         adversarial=AdversarialConfig(method="fgsm", eps=[0.1, 0.3], phases=[1]))
    result = train(config, tmp_path / "run", data=small, **QUIET)
    assert [row["adv_fraction"] for row in result.history] == [0.0, 0.5]  # 128 + 128 + 44 of 600
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [row["adv_fraction"] for row in csv.DictReader(f)] == ["0.0", "0.5"]
    clean = train(TrainConfig(recipe=[Phase("ce", 1)]), tmp_path / "clean", data=small, **QUIET)
    assert "adv_fraction" not in clean.history[0]  # runs without AT keep their columns


def test_runs_written_before_the_new_fields_still_match_their_config(small, tmp_path):
    config = TrainConfig(recipe=[Phase("ce", 1)])
    train(config, tmp_path / "run", data=small, **QUIET)
    path = tmp_path / "run" / "config.yaml"
    old = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k not in ("adversarial", "max_train_samples")}
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    assert is_complete(tmp_path / "run", config)
    assert not is_complete(tmp_path / "run", TrainConfig(recipe=[Phase("ce", 1)], max_train_samples=100))
    train(config, tmp_path / "run", data=small, resume=True, **QUIET)  # no "config differs" refusal
