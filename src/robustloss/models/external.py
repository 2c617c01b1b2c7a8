"""Models robustloss did not train: ``load_external_model("package.module:factory", "weights.safetensors")``.

The factory is any importable callable that returns an ``nn.Module`` mapping [0, 1] images to logits
(normalisation inside). Weights are a safetensors file or a PyTorch state dict loaded with
``weights_only=True`` (optionally nested under ``state_dict`` or ``model``), so loading never runs code
from the weights file. The import of the factory does run the user's own module, as naming it asks.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from torch import nn

from robustloss.errors import CheckpointError, ConfigError


def load_external_model(factory: str, weights: str | Path | None = None) -> nn.Module:
    """Build the model from ``factory`` ("package.module:callable") and load ``weights`` into it (eval mode)."""
    module_name, sep, attribute = factory.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"--model expects package.module:factory (a callable returning an nn.Module), got {factory!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` does: users' own modules live there
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"--model {factory}: cannot import {module_name!r} ({err}); run from the folder that "
                          "contains it or install it") from None
    build = getattr(module, attribute, None)
    if not callable(build):
        raise ConfigError(f"--model {factory}: {module_name} has no callable {attribute!r}")
    model = build()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {factory}: the factory returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        state = read_state_dict(Path(weights))
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise CheckpointError(f"{weights} does not fit {factory}: {first[1].strip() if len(first) > 1 else first[0]}"
                                  ) from None
    return model.eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a ``torch.save``d dict of tensors, never unpickling code."""
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {path} as safetensors: {err}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, or pickled code that weights_only refuses
        raise CheckpointError(f"cannot load {path} as a state dict (weights_only=True): {err}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    return state
