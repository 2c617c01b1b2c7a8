"""Attack objectives: per-sample values the attacker *maximises*.

Signature: ``objective(logits, labels, targeted) -> Tensor[N]``. For untargeted attacks
``labels`` are the true classes; for targeted attacks they are the target classes.

* ``ce``  - cross-entropy (Goodfellow et al. 2015; the papers' default).
* ``cw``  - logit margin of Carlini & Wagner (2017): max_{j!=y} a_j - a_y (untargeted),
            a_t - max_{j!=t} a_j (targeted). Invariant to how the softmax is saturated.
* ``dlr`` - difference of logits ratio of Croce & Hein (2020), scale invariant.
* ``mmc`` - the adaptive objective for center heads whose logits are -||z - mu_k||^2 (MMC paper,
            Appendix B.4): untargeted, raise the distance to the true center (L_Ada^un,1 =
            -L_MMC(z, y)); targeted, shrink the distance to the target center (L_Ada^tar,1).
            The C&W forms (un,2 / tar,2) are ``cw`` applied to the same logits.
* ``adaptive`` - not a function: attacks resolve it, per model, to the objective named by the
            loss the model was trained with (``Loss.attack_objective``), falling back to ``cw``.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

from robustloss.errors import ConfigError, UnknownNameError
from robustloss.registry import Registry

Objective = Callable[[Tensor, Tensor, bool], Tensor]
OBJECTIVES: Registry = Registry("attack objective")


def _largest_other(logits: Tensor, labels: Tensor) -> Tensor:
    """max_{j != label} logits_j per sample."""
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1)


@OBJECTIVES.register("ce")
def cross_entropy(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    loss = F.cross_entropy(logits, labels, reduction="none")
    return -loss if targeted else loss


@OBJECTIVES.register("cw")
def logit_margin(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    own = logits.gather(1, labels[:, None]).squeeze(1)
    margin = _largest_other(logits, labels) - own
    return -margin if targeted else margin


@OBJECTIVES.register("dlr")
def difference_of_logits_ratio(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    needed = 4 if targeted else 3
    if logits.shape[1] < needed:
        raise ValueError("the DLR objective needs at least 3 classes (4 when targeted)")
    ranked = logits.sort(dim=1, descending=True).values
    own = logits.gather(1, labels[:, None]).squeeze(1)
    if targeted:
        # labels are targets here; the true class is unknown to the objective, so use the
        # top non-target logit as the class to push down (Croce & Hein, Eq. 7 in spirit).
        top_other = _largest_other(logits, labels)
        scale = ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12
        return (own - top_other) / scale
    scale = ranked[:, 0] - ranked[:, 2] + 1e-12
    return (_largest_other(logits, labels) - own) / scale


@OBJECTIVES.register("mmc")
def center_distance(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    own = logits.gather(1, labels[:, None]).squeeze(1)  # -scale * ||z - mu_label||^2
    return own if targeted else -own


ADAPTIVE = "adaptive"


def get_objective(name: str) -> Objective:
    return OBJECTIVES.get(name)


def check_objective_name(name: str, *, also: tuple[str, ...] = (), where: str = "") -> None:
    """Refuse an unknown objective name, listing the accepted ones: the registered objectives,
    ``adaptive`` and ``also`` (names a caller accepts besides, like training's ``loss``). ``where``
    (a config key) turns the refusal into a ``ConfigError`` that names it."""
    if name == ADAPTIVE or name in also or name in OBJECTIVES:
        return
    error = UnknownNameError("attack objective", name, [*OBJECTIVES.names(), ADAPTIVE, *also])
    if where:
        raise ConfigError(f"{where}: {error}")
    raise error


def resolve_objective(name: str, model) -> str:
    """The concrete objective for ``model``: ``name`` itself, or for ``adaptive`` the one that
    fits the loss the model was trained with (recorded in its saved spec as ``trained_with``)."""
    if name != ADAPTIVE:
        return name
    return objective_for_loss(getattr(model, "trained_with", None))


def objective_for_loss(loss_name: str | None) -> str:
    """The objective that fits a loss's head, used by ``objective="adaptive"``."""
    if loss_name is None:
        return "cw"
    from robustloss.losses import LOSSES  # local import: attacks must not need losses at import

    if loss_name in LOSSES:
        return LOSSES.get(loss_name).attack_objective
    return "cw"

