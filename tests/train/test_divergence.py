"""Divergence with a finite loss stops training like a NaN loss, and a model with NaN outputs is never evaluated."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustloss.checkpoint import safe_load
from robustloss.data.split import ImageSplit
from robustloss.errors import NonFiniteLossError, NonFiniteOutputError
from robustloss.evaluate.config import AttackSpec, EvaluateConfig
from robustloss.evaluate.engine import run_plan
from robustloss.evaluate.run import evaluate
from robustloss.evaluate.sanity import sanity_checks
from robustloss.losses import LOSSES
from robustloss.losses.base import Loss
from robustloss.models import create_model
from robustloss.train import OptimizerConfig, Phase, TrainConfig, train
from robustloss.train.loop import train_one_epoch

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


def diverging(epochs: int, lr: float = 1e9, **optimizer) -> TrainConfig:
    """SGD on 300 digits (two steps per epoch): at lr 1e9 the loss stays a finite ~1e33 while the
    epoch's last update leaves the network computing NaN."""
    return TrainConfig(recipe=[Phase("ce", epochs)], max_train_samples=300, seed=0,
                       optimizer=OptimizerConfig(name="sgd", lr=lr, **optimizer))


def test_finite_loss_divergence_at_lr_1e9_is_stopped(mnist5k, tmp_path, monkeypatch):
    losses = []
    real = train_one_epoch

    def recording(*args, **kwargs):
        stats = real(*args, **kwargs)
        losses.append(stats["train_loss"])
        return stats

    # the error comes after the epoch, so its mean loss is recorded on the way out to show it stayed finite
    monkeypatch.setattr("robustloss.train.trainer.train_one_epoch", recording)
    with pytest.raises(NonFiniteLossError) as raised:
        train(diverging(2), tmp_path / "run", data=mnist5k, **QUIET)
    message = str(raised.value)
    assert losses and all(torch.isfinite(torch.tensor(losses))) and losses[0] > 1e20  # huge, never NaN
    assert "NaN or infinite" in message and "loss became" not in message
    assert "none (failed in the first epoch)" in message and "the rate in effect was 1e+09" in message
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()  # nothing diverged was saved
    assert not (tmp_path / "run" / "model.pt").exists()


def test_divergence_in_a_later_epoch_keeps_the_last_good_checkpoint(mnist5k, tmp_path):
    # lr 0.05 for epoch 1, then x2e10 = 1e9 from epoch 2 on
    config = diverging(3, lr=0.05, milestones=[1], gamma=2e10)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is kept") as raised:
        train(config, tmp_path / "run", data=mnist5k, **QUIET)
    message = str(raised.value)
    assert "epoch 2/3" in message and str(tmp_path / "run" / "checkpoints" / "last.pt") in message
    assert "the rate in effect was 1e+09; optimizer.lr is 0.05" in message  # not the base rate alone
    state = safe_load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "model.pt").exists()


def test_nan_loss_message_quotes_the_learning_rate_in_effect(mnist5k, tmp_path, monkeypatch):
    class NanInEpochTwo(Loss):
        calls = 0

        def per_sample(self, logits, labels, features=None):
            type(self).calls += 1
            value = nn.functional.cross_entropy(logits, labels, reduction="none")
            return value * float("nan") if type(self).calls > 2 else value

    monkeypatch.setitem(LOSSES._entries, "nan-in-epoch-two", NanInEpochTwo)
    config = TrainConfig(recipe=[Phase("nan-in-epoch-two", 2)], max_train_samples=300, seed=0,
                         optimizer=OptimizerConfig(lr=0.01, milestones=[1], gamma=0.5))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan") as raised:
        train(config, tmp_path / "run", data=mnist5k, **QUIET)
    assert "the rate in effect was 0.005; optimizer.lr is 0.01" in str(raised.value)


class NanWhereMarked(nn.Module):
    """A working classifier that returns NaN logits for images whose top-left pixel is exactly 1."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.num_classes = model, 10

    def forward(self, x):
        logits = self.model(x)
        marked = x[:, 0, 0, 0] == 1.0
        return torch.where(marked[:, None], torch.full_like(logits, float("nan")), logits)


def test_a_model_with_nan_outputs_is_refused_by_evaluation(trained_lenet, mnist5k):
    x, y = mnist5k.test.batch(slice(0, 64))
    x = x.clone()
    x[5, 0, 0, 0] = 1.0
    model = NanWhereMarked(trained_lenet).eval()
    checks = {c.name: c for c in sanity_checks(model, x, y)}
    assert checks["finite-outputs"].status == "fail" and "1/64" in checks["finite-outputs"].detail
    assert "retrain" in checks["finite-outputs"].action
    with pytest.raises(ValueError, match="cannot evaluate honestly.*NaN or infinite"):
        evaluate(model, (x, y), [AttackSpec("fgsm", eps=[0.1])], device="cpu", progress=False)


def test_the_engine_refuses_nan_clean_logits_the_sanity_sample_did_not_see(trained_lenet, mnist5k):
    """The pre-attack checks look at 256 images; the engine's clean pass sees them all."""
    x, y = mnist5k.test.batch(slice(0, 300))
    x = x.clone()
    x[290, 0, 0, 0] = 1.0  # beyond the sanity sample
    model = NanWhereMarked(trained_lenet).eval()
    assert "finite-outputs" not in {c.name for c in sanity_checks(model, x, y)}
    with pytest.raises(NonFiniteOutputError, match=r"NaN or infinite on 1 of 300 samples \(the first is sample 290\)"):
        run_plan(model, ImageSplit(x, y), [AttackSpec("fgsm", eps=[0.1])], EvaluateConfig(), device="cpu",
                 progress=False)
    with pytest.raises(ValueError, match="retrain it"):  # through the front door too
        evaluate(model, (x, y), [AttackSpec("fgsm", eps=[0.1])], device="cpu", progress=False)


def test_weights_blown_up_to_nan_are_named(tmp_path):
    from robustloss.train.divergence import check_finite_state

    model = create_model("lenet5")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    check_finite_state("epoch 1", model=model, optimizer=optimizer)  # a fresh model passes
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    optimizer.step()
    next(iter(optimizer.state.values()))["momentum_buffer"][0] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"the optimizer's state\.0\.momentum_buffer became non-finite"):
        check_finite_state("epoch 1", model=model, optimizer=optimizer)
