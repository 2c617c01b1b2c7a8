"""Clean predictions: the arg-max class of every sample, in eval mode and full precision.

Training (test accuracy per epoch) and evaluation (which samples are correct, and so attacked) share
it; it lives with the models because it needs nothing but a model and images."""

from __future__ import annotations

import torch
from torch import Tensor

from robustloss.data.split import ImageSplit
from robustloss.errors import NonFiniteOutputError
from robustloss.models.classifier import Classifier
from robustloss.models.modes import kept_modes
from robustloss.precision import full_precision


@torch.no_grad()
def predict(model: Classifier, x: ImageSplit | Tensor, *, batch_size: int = 1000, device: torch.device | str = "cpu",
            require_finite: bool = False) -> Tensor:
    """Arg-max class for every sample of a split (or an image tensor in [0, 1]), in eval mode.

    Always a float32 pass, even inside an autocast region: this is the clean verdict that
    decides which samples count as correct (and get attacked), so it must not depend on bf16
    rounding. ``require_finite``: raise ``NonFiniteOutputError`` if any sample's logits hold a
    NaN or inf (their arg-max is arbitrary, so the verdict would be noise)."""
    n = len(x)
    preds, nonfinite = [], []
    with kept_modes(model):
        model.eval()
        for start in range(0, n, batch_size):
            batch = x.batch(slice(start, start + batch_size))[0] if isinstance(x, ImageSplit) else x[start : start + batch_size]
            # no_grad: a verdict needs no graph, and building one for every clean pass (each epoch's test
            # accuracy, every evaluation's clean predictions) costs time and memory for nothing
            with full_precision(device), torch.no_grad():
                logits = model(batch.to(device))
            preds.append(logits.argmax(1).cpu())
            if require_finite:
                nonfinite.append((~torch.isfinite(logits).flatten(1).all(1)).cpu())
    if nonfinite and bool(torch.cat(nonfinite).any()):
        bad = torch.cat(nonfinite)
        raise NonFiniteOutputError(f"the model's logits are NaN or infinite on {int(bad.sum())} of {n} samples "
                                   f"(the first is sample {int(bad.nonzero()[0])})")
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)
