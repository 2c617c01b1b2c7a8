"""Divergence that the loss alone does not show.

A NaN/inf loss stops training at once (``robustloss.train.loop``). A run can also diverge with a loss
that is still a float: SGD at lr 1e9 on LeNet-5 reaches a loss of 8e33 and weights of 1e37, both
finite, while the final update leaves the network computing NaN. Such a model must not be
checkpointed as "good", nor evaluated. So after every epoch, before its checkpoint is written:

* every floating-point tensor of the model, of the loss (e.g. center-loss centers) and of the
  optimizer's state (momentum, Adam moments) must be finite: a non-finite one poisons the next step;
* the model's logits on the test split must be finite: the trainer's test-accuracy pass computes them
  anyway (``predict(..., require_finite=True)``), and NaN logits give an arbitrary arg-max that would
  otherwise pass for a 10 % accuracy.

The logits of every training batch are checked as it is trained on, with the loss (``loop.py``).
Either failure raises ``NonFiniteLossError``, like a NaN loss, so ``last.pt`` stays the last good state.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from robustloss.errors import NonFiniteLossError


def check_finite_state(where: str, **owners: object) -> None:
    """Raise ``NonFiniteLossError`` naming the first non-finite tensor of ``owners`` (name -> module or
    optimizer: anything with a ``state_dict``)."""
    for owner, holder in owners.items():
        for name, tensor in _tensors(holder.state_dict()):  # type: ignore[attr-defined]
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise NonFiniteLossError(f"{where}: the {owner}'s {name} became non-finite ({bad} of "
                                         f"{tensor.numel()} values NaN or infinite) although the loss stayed finite")


def _tensors(state: object, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """Every tensor in a (nested) state dict, with a dotted name."""
    if isinstance(state, Tensor):
        yield prefix or "tensor", state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _tensors(value, f"{prefix}[{i}]")
