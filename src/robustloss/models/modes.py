"""``kept_modes(model)``: run a block in any mode and give every module its own train/eval flag back.

``model.train(was_training)`` is not a restore: it sets every submodule to one flag. A wrapper built by
the caller (a defence, a user's ``nn.Sequential``) is in training mode by default while the trained
network inside it is in eval mode; restoring with ``train(True)`` would switch that network's batch norm
and dropout to training mode behind the caller's back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def kept_modes(model: nn.Module) -> Iterator[nn.Module]:
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
