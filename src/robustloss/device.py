"""Device selection. Nothing in robustloss hard-codes ``.cuda()``."""

from __future__ import annotations

import torch

from robustloss.errors import ConfigError

DEVICE_HELP = "auto (a GPU when there is one), cpu, cuda, cuda:1, ..."


def resolve_device(name: str | None = "auto") -> torch.device:
    """The ``torch.device`` for ``--device NAME``; a name this machine cannot use is a ConfigError
    that says which devices it has, so the mistake surfaces before any data or model is loaded."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's own message lists every backend it was built with
        raise ConfigError(f"--device {name!r}: not a device name; use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu "
                              "(or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name!r}: this machine has {count} CUDA device(s), cuda:0 to "
                              f"cuda:{count - 1}")
    elif device.type != "cpu" and not _backend_available(device.type):
        raise ConfigError(f"--device {name!r}: no {device.type} device is available on this machine; "
                          f"use {DEVICE_HELP}")
    return device


def _backend_available(kind: str) -> bool:
    """Whether torch can run on ``kind`` here (mps, xpu, ...); "meta" and friends hold no data to train on."""
    backend = getattr(torch.backends, kind, None) if kind == "mps" else getattr(torch, kind, None)
    available = getattr(backend, "is_available", None)
    return bool(callable(available) and available())
