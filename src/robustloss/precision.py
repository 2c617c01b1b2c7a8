"""Numeric precision of forward passes: float32, or bfloat16 autocast for speed.

bf16 keeps float32's exponent range but only 8 bits of mantissa, so logits computed under
autocast can differ from the float32 ones in the last digits - enough to flip an arg-max
between two nearly tied classes. That is harmless for a gradient step (the sign or direction
barely changes) but not for a verdict: whether an attack succeeded, or a clean sample is
classified correctly, must always come from a float32 pass (``full_precision``), or a model
could be reported fooled by a rounding artefact.

Used by ``Attack.__call__`` (gradient steps under the requested precision, the final check in
float32) and by training (``robustloss.train.speed``).
"""

from __future__ import annotations

from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def autocast_context(precision: str, device: torch.device | str) -> torch.autocast:
    """Forward passes in ``precision`` on ``device``'s type of autocast.

    ``fp32`` switches autocast off explicitly rather than doing nothing, so float32 is what
    runs even inside a caller's own autocast region.
    """
    device_type = torch.device(device).type
    if check_precision(precision) == "fp32":
        return torch.autocast(device_type, enabled=False)
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16: {device} does not support bfloat16 (it needs an Ampere or newer GPU); "
                         f"use precision fp32")
    return torch.autocast(device_type, dtype=torch.bfloat16)


def full_precision(device: torch.device | str) -> torch.autocast:
    """Autocast off: a float32 forward pass, whatever region the caller is in (for verdicts)."""
    return autocast_context("fp32", device)
