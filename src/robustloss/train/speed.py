"""The fast single-device path: where the training data lives, and how the model runs.

Every setting here changes how fast a step runs, never which random numbers it draws: the
shuffle order, crops, flips and adversarial draws all come from the run's CPU generator
whatever the device, so a run stays reproducible and resumable exactly as on the slow path.

* ``place_training_data`` - the whole training split as one tensor on the GPU when it fits
  (``data_on_device``), so a step indexes, converts and augments its batch there instead of
  copying it from host memory;
* ``autocast_context`` / ``full_precision_loss`` - ``precision: bf16`` runs forward passes
  under bfloat16 autocast, while the loss itself is computed in float32 on float32 logits and
  features, so the papers' losses (margins, distances to centers) are never evaluated in bf16;
* ``prepare_model`` / ``release_model`` - ``channels_last`` memory format and ``torch.compile``
  for the training steps, undone before the model is saved or returned.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor

from robustloss.precision import autocast_context
from robustloss.data.split import ImageSplit
from robustloss.errors import ConfigError, RobustlossError
from robustloss.losses.base import Loss
from robustloss.models.classifier import Classifier
from robustloss.train.config import TrainConfig

_log = logging.getLogger(__name__)

__all__ = ["CompileFailedError", "autocast_context", "check_supported", "explain_compile_errors",
           "full_precision_loss", "place_training_data", "prepare_batch", "prepare_model", "release_model"]

# "auto" puts the training split on the GPU when it takes at most this share of the free
# memory: the rest is left to the model, its activations and the optimizer state.
DEVICE_MEMORY_SHARE = 0.5

TURN_COMPILE_OFF = "train without it: drop --compile, or set `compile: false` in the config"


class CompileFailedError(RobustlossError, RuntimeError):
    """torch.compile could not compile the model; the message says how to turn it off."""


def check_supported(config: TrainConfig, device: torch.device) -> None:
    """Fail before any data is moved when the device cannot run the requested precision."""
    try:
        autocast_context(config.precision, device)
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"precision: {err}") from None


# --- where the training data lives -------------------------------------------------------------
def place_training_data(split: ImageSplit, mode: str, device: torch.device,
                        log: Callable[[str], None] = _log.info) -> ImageSplit:
    """The training split on ``device`` (``always``, or ``auto`` when it fits), else as it is."""
    if mode not in ("auto", "always", "never"):
        raise ConfigError(f"data_on_device: expected auto, always or never; got {mode!r}")
    if mode == "never" or device.type == "cpu":  # on CPU the split already is one tensor in host memory
        return split
    size = split.nbytes
    if mode == "auto":
        free = free_device_memory(device)
        if free is None or size > DEVICE_MEMORY_SHARE * free:
            known = "unknown" if free is None else f"{free / 2**20:.0f} MiB"
            log(f"training data stays in host memory ({size / 2**20:.0f} MiB; free on {device}: {known}); "
                f"data_on_device: always forces it onto the device")
            return split
    try:
        resident = split.to(device)
    except torch.cuda.OutOfMemoryError:
        raise ConfigError(f"data_on_device: the training split ({size / 2**20:.0f} MiB) does not fit in the memory "
                          f"of {device}; use data_on_device: auto or never") from None
    log(f"training data resident on {device} ({size / 2**20:.0f} MiB, {split.images.dtype})")
    return resident


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device; None where the device cannot tell."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free


# --- precision ---------------------------------------------------------------------------------
class FullPrecisionLoss:
    """Calls a training loss outside autocast, on float32 logits and features.

    Under bf16 autocast a model's logits come out in bfloat16; a margin or a distance to a
    class center computed from them would lose most of its digits. The forward pass may be
    fast and coarse, the loss may not.
    """

    def __init__(self, loss: Loss):
        self.loss = loss

    def __call__(self, logits: Tensor, labels: Tensor, features: Tensor | None = None) -> Tensor:
        with autocast_context("fp32", logits.device):
            return self.loss(logits.float(), labels, None if features is None else features.float())


def full_precision_loss(loss: Loss, precision: str) -> Callable[..., Tensor]:
    """``loss`` itself in float32 runs (nothing to guard), else a ``FullPrecisionLoss``."""
    return loss if precision == "fp32" else FullPrecisionLoss(loss)


# --- memory format and compilation --------------------------------------------------------------
def prepare_batch(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def prepare_model(model: Classifier, config: TrainConfig, device: torch.device) -> Classifier:
    """Apply ``channels_last`` and ``compile`` to a model already on ``device`` (in place)."""
    if config.channels_last:
        model.to(device=device, memory_format=torch.channels_last)
    if config.compile:
        _compile_backbone(model)
    return model


def release_model(model: Classifier) -> Classifier:
    """Undo ``compile``: the saved and returned model runs eagerly, like any loaded one."""
    if getattr(vars(model.backbone).get("forward"), "compiled_by_robustloss", False):
        del model.backbone.forward
    return model


def _compile_backbone(model: Classifier) -> None:
    """Compile the backbone's forward in place.

    The backbone is where the convolutions are, and every entry point (``forward``,
    ``features``, ``forward_with_features``) goes through it; the head stays eager because a
    recipe phase may replace it. Compiling the bound method (rather than wrapping the module)
    keeps parameter names, so checkpoints look exactly as without ``compile``.
    """
    backbone = model.backbone
    if "forward" in vars(backbone):  # already compiled
        return
    compiled = torch.compile(backbone.forward)  # lazy: compiles at the first call
    compiled.compiled_by_robustloss = True  # type: ignore[attr-defined]  # what release_model undoes
    backbone.forward = compiled


@contextmanager
def explain_compile_errors(enabled: bool) -> Iterator[None]:
    """Turn a torch.compile failure (raised at the first forward or backward pass, where
    compilation really happens) into an error that says how to train without it."""
    if not enabled:
        yield
        return
    from torch._dynamo.exc import TorchDynamoException  # inductor's errors derive from it too

    try:
        yield
    except TorchDynamoException as err:
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise CompileFailedError(f"compile: torch.compile failed ({type(err).__name__}: {first_line}); "
                                 f"{TURN_COMPILE_OFF}") from err
