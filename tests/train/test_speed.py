"""The fast single-device path: resident data, bf16 autocast, channels_last, compile, and the
float32 verdicts of attacks run under bf16."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
import yaml

from robustloss.attacks import create_attack
from robustloss.cli import main as cli_main
from robustloss.config import from_dict, to_dict
from robustloss.data.spec import Dataset
from robustloss.data.split import ImageSplit
from robustloss.errors import ConfigError
from robustloss.experiments.schema import config_hash
from robustloss.losses import LOSSES
from robustloss.losses.base import Loss
from robustloss.models import create_model
from robustloss.train import AdversarialConfig, Phase, TrainConfig, speed, train
from robustloss.models.predict import predict

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}

# config_hash(TrainConfig()) computed with the code before the speed settings existed: adding
# them (with defaults) must not change the hash of any existing run.
DEFAULT_CONFIG_HASH = "44136fa355b3678a"


@pytest.fixture(scope="module")
def small(mnist5k):
    """600 training digits: 3 steps per epoch at batch 256."""
    return Dataset(mnist5k.spec, mnist5k.train.subset(slice(0, 600)), mnist5k.test.subset(slice(0, 200)))


@pytest.fixture(scope="module")
def medium(mnist5k):
    return Dataset(mnist5k.spec, mnist5k.train.subset(slice(0, 1500)), mnist5k.test.subset(slice(0, 500)))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class DtypeRecordingCE(Loss):
    """Cross-entropy that records the dtypes it is trained on and those the model's head produced."""

    trained_on: ClassVar[list[tuple[torch.dtype, torch.dtype]]] = []
    head_outputs: ClassVar[list[torch.dtype]] = []

    def per_sample(self, logits, labels, features=None):
        return F.cross_entropy(logits, labels, reduction="none")

    def forward(self, logits, labels, features=None):  # the training step's loss (gains call per_sample)
        type(self).trained_on.append((logits.dtype, features.dtype))
        return super().forward(logits, labels, features)

    def bind(self, model):
        model.head.register_forward_hook(lambda module, args, out: type(self).head_outputs.append(out.dtype))


@pytest.fixture
def recording_loss(monkeypatch):
    monkeypatch.setitem(LOSSES._entries, "recording-ce", DtypeRecordingCE)
    DtypeRecordingCE.trained_on, DtypeRecordingCE.head_outputs = [], []
    return DtypeRecordingCE


# --- resident data ------------------------------------------------------------------------------
def test_resident_and_host_paths_give_identical_weights(small, tmp_path):
    """The shuffle and crops come from the CPU generator whichever path runs (crop-flip on digits
    only to exercise batch augmentation)."""
    config = TrainConfig(recipe=[Phase("ce", 1)], augment="crop-flip", seed=2)
    resident = train(TrainConfig(**{**vars(config), "data_on_device": "always"}), tmp_path / "a", data=small, **QUIET)
    host = train(TrainConfig(**{**vars(config), "data_on_device": "never"}), tmp_path / "b", data=small, **QUIET)
    assert same_weights(weights(resident.model), weights(host.model))


def test_on_cpu_the_split_is_already_resident(small):
    assert speed.place_training_data(small.train, "always", torch.device("cpu"), log=print) is small.train
    assert small.train.to("cpu") is small.train
    assert small.train.nbytes == small.train.images.numel() + 8 * len(small.train)  # uint8 images, int64 labels


def test_auto_moves_the_split_only_when_it_fits(small, monkeypatch):
    moved, messages = [], []
    monkeypatch.setattr(ImageSplit, "to", lambda self, device: moved.append(device) or "moved")
    cuda = torch.device("cuda")
    monkeypatch.setattr(speed, "free_device_memory", lambda device: small.train.nbytes)  # 2x the split is free
    assert speed.place_training_data(small.train, "auto", cuda, log=messages.append) is small.train
    assert "stays in host memory" in messages[-1] and "data_on_device: always" in messages[-1]
    monkeypatch.setattr(speed, "free_device_memory", lambda device: 2 * small.train.nbytes)
    assert speed.place_training_data(small.train, "auto", cuda, log=messages.append) == "moved"
    assert speed.place_training_data(small.train, "never", cuda, log=messages.append) is small.train
    assert moved == [cuda]


def test_batch_takes_an_index_on_the_splits_device(small):
    index = torch.tensor([3, 1, 4])
    x, y = small.train.to("cpu").batch(index)
    assert x.dtype == torch.float32 and torch.equal(y, small.train.labels[index])


# --- bf16 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("adversarial", [None, AdversarialConfig(method="pgd", eps=0.1, steps=2),
                                         AdversarialConfig(method="trades", eps=0.1, steps=2)],
                         ids=["clean", "pgd-at", "trades"])
def test_bf16_trains_with_float32_losses(medium, tmp_path, recording_loss, adversarial):
    config = TrainConfig(recipe=[Phase("recording-ce", 2)], precision="bf16", adversarial=adversarial)
    result = train(config, tmp_path / "run", data=medium, **QUIET)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)
    assert result.history[-1]["test_acc"] > 0.2  # chance is 0.1
    assert torch.bfloat16 in recording_loss.head_outputs  # autocast really ran the forward passes
    assert recording_loss.trained_on and set(recording_loss.trained_on) == {(torch.float32, torch.float32)}


def test_fp32_training_sees_no_autocast(small, tmp_path, recording_loss):
    train(TrainConfig(recipe=[Phase("recording-ce", 1)]), tmp_path / "run", data=small, **QUIET)
    assert set(recording_loss.head_outputs) == {torch.float32}


def test_unknown_precision_names_the_key():
    with pytest.raises(ConfigError, match=r"precision: expected one of 'fp32', 'bf16'"):
        from_dict(TrainConfig, {"precision": "fp16"})
    with pytest.raises(ConfigError, match=r"data_on_device: expected one of 'auto', 'always', 'never'"):
        from_dict(TrainConfig, {"data_on_device": "yes"})


# --- channels_last and compile -----------------------------------------------------------------
def test_channels_last_trains(small, tmp_path):
    result = train(TrainConfig(recipe=[Phase("ce", 2)], channels_last=True), tmp_path / "run", data=small, **QUIET)
    conv = next(m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert result.history[-1]["test_acc"] > 0.2


def test_compile_is_opt_in(small):
    model = create_model("lenet5")
    speed.prepare_model(model, TrainConfig(), torch.device("cpu"))
    assert "forward" not in vars(model.backbone) and TrainConfig().compile is False


def test_compile_failure_says_how_to_turn_it_off(small, tmp_path, monkeypatch):
    from torch._dynamo.exc import TorchDynamoException

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise TorchDynamoException("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(speed.CompileFailedError, match=r"no C\+\+ compiler found.*drop --compile.*compile: false"):
        train(TrainConfig(recipe=[Phase("ce", 1)], compile=True), tmp_path / "run", data=small, **QUIET)
    assert not (tmp_path / "run" / "model.pt").exists()


COMPILE_PROBE = """
import torch
torch.set_num_threads(2)
layer = torch.nn.Conv2d(1, 2, 3)
out = torch.compile(layer.forward)(torch.rand(2, 1, 5, 5, requires_grad=True))
out.sum().backward()
"""
COMPILE_PROBE_SECONDS = 30


@pytest.fixture(scope="module")
def compile_works():
    """torch.compile is tested only where it compiles a small graph quickly (it needs a C++
    compiler on CPU, and a cold cache costs tens of seconds); a separate process keeps a
    hang or a crash out of the test session."""
    try:
        probe = subprocess.run([sys.executable, "-c", COMPILE_PROBE], capture_output=True, text=True,
                               timeout=COMPILE_PROBE_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"torch.compile did not compile a one-layer graph within {COMPILE_PROBE_SECONDS}s here "
                    f"(cold inductor cache or slow C++ compiler); compile stays untested on this machine")
    if probe.returncode != 0:
        pytest.skip(f"torch.compile does not work here: {probe.stderr.strip().splitlines()[-1:]}")


def test_compiled_training_matches_eager(small, tmp_path, compile_works):
    config = TrainConfig(recipe=[Phase("ce", 1)], seed=5)
    eager = train(config, tmp_path / "eager", data=small, **QUIET)
    compiled = train(TrainConfig(**{**vars(config), "compile": True}), tmp_path / "compiled", data=small, **QUIET)
    assert "forward" not in vars(compiled.model.backbone)  # saved and returned uncompiled
    assert compiled.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=1e-3)
    a, b = weights(eager.model), weights(compiled.model)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)


# --- attacks under bf16 -------------------------------------------------------------------------
def _record_head_dtypes(model):
    seen: list[torch.dtype] = []
    handle = model.head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    return seen, handle


@pytest.mark.parametrize("outer_autocast", [False, True], ids=["plain", "inside-autocast"])
def test_bf16_attack_reports_the_float32_verdict(trained_lenet, mnist5k, outer_autocast):
    x, y = mnist5k.test.batch(slice(0, 200))
    attack = create_attack("pgd", eps=0.1, steps=5, step_size=0.03)
    seen, handle = _record_head_dtypes(trained_lenet)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=outer_autocast):
            result = attack(trained_lenet, x, y, generator=torch.Generator().manual_seed(0), precision="bf16")
    finally:
        handle.remove()
    assert torch.bfloat16 in seen[:-1]  # the gradient steps ran under bf16 ...
    assert seen[-1] == torch.float32  # ... the verdict did not
    assert result.x_adv.dtype == torch.float32
    with torch.no_grad():
        fp32_pred = trained_lenet(result.x_adv).argmax(1)
    assert torch.equal(result.pred, fp32_pred)
    assert torch.equal(result.success, fp32_pred != y)


def test_fp32_attack_inside_autocast_stays_float32(trained_lenet, mnist5k):
    x, y = mnist5k.test.batch(slice(0, 50))
    seen, handle = _record_head_dtypes(trained_lenet)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            create_attack("fgsm", eps=0.1)(trained_lenet, x, y)
            predict(trained_lenet, x)  # the clean verdict is float32 too
    finally:
        handle.remove()
    assert set(seen) == {torch.float32}


def test_attack_rejects_an_unknown_precision(tiny_model):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16; got 'fp16'"):
        create_attack("fgsm", eps=0.1)(tiny_model, torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), precision="fp16")


# --- config and CLI -----------------------------------------------------------------------------
def test_default_config_hash_is_unchanged():
    assert config_hash(TrainConfig()) == DEFAULT_CONFIG_HASH
    spelled_out = TrainConfig(data_on_device="auto", precision="fp32", channels_last=False, compile=False)
    assert config_hash(spelled_out) == DEFAULT_CONFIG_HASH
    assert config_hash(TrainConfig(precision="bf16")) != DEFAULT_CONFIG_HASH


def test_speed_settings_round_trip():
    config = TrainConfig(data_on_device="never", precision="bf16", channels_last=True, compile=True)
    assert from_dict(TrainConfig, to_dict(config)) == config


def test_cli_train_flags_set_the_speed_keys(tmp_path):
    out = tmp_path / "run"
    code = cli_main(["train", "--dataset", "mnist-5k", "--recipe", "ce:1", "--max-train-samples", "300",
                     "--precision", "bf16", "--channels-last", "--data-on-device", "never",
                     "--device", "cpu", "--no-progress", "--out", str(out)])
    assert code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["precision"], saved["channels_last"], saved["data_on_device"], saved["compile"]) == \
        ("bf16", True, "never", False)
