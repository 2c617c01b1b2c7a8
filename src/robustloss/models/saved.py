"""Saving a trained model together with what is needed to rebuild it.

A model file holds ``{"model_spec": ..., "state_dict": ...}``. The spec names the
architecture, its constructor arguments and the head (the loss whose ``make_head`` built
it, or None for the standard linear head), so ``load_model`` returns exactly the decision
function that was trained, head included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustloss.checkpoint import atomic_save, safe_load
from robustloss.config import from_dict, to_dict
from robustloss.models.classifier import Classifier
from robustloss.models.registry import create_model


@dataclass
class HeadSpec:
    loss: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    name: str
    params: dict[str, Any]  # num_classes, in_channels, input_size, and architecture options
    head: HeadSpec | None = None
    loss: str | None = None  # the loss of the last training phase (picks the "adaptive" attack objective)

    def build(self) -> Classifier:
        model = create_model(self.name, **self.params)
        model.trained_with = self.loss
        if self.head is not None:
            from robustloss.losses import create_loss  # models must not import losses at import time

            head = create_loss(self.head.loss, **self.head.params).make_head(model.feature_dim, model.num_classes)
            if head is not None:
                model.replace_head(head)
        return model


def save_model(path: str | Path, model: Classifier, spec: ModelSpec, **extra: Any) -> Path:
    return atomic_save({"model_spec": to_dict(spec), "state_dict": model.state_dict(), **extra}, path)


def load_model(path: str | Path, map_location: str = "cpu", *, sha256: str | None = None
               ) -> tuple[Classifier, ModelSpec, dict]:
    """(model in eval mode, its spec, the whole saved payload). The file's integrity is checked first
    (``safe_load``; ``sha256``: the digest recorded when it was written, if the caller has one)."""
    payload = safe_load(path, map_location, sha256=sha256, remedy=_rewrite_advice(Path(path)))
    spec = from_dict(ModelSpec, payload["model_spec"])
    model = spec.build()
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, spec, payload


def _rewrite_advice(path: Path) -> str:
    """What to do about a damaged model file: a run folder can rewrite it from its last checkpoint."""
    run = path.parent
    if (run / "config.yaml").is_file() and (run / "checkpoints").is_dir():
        return (f"delete it and rewrite it from the run's last checkpoint with `robustloss train --config "
                f"{run / 'config.yaml'} --out {run} --resume`")
    return "delete it and save or train the model again"
