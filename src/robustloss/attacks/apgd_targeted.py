"""APGD-T: APGD with the targeted DLR loss, run against the top-k wrong classes one after another.

Reference: F. Croce and M. Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020: the targeted DLR loss (Eq. 7) and
APGD-T, the targeted member of AutoAttack. The step-size schedule, momentum, projection and
random start are APGD's, unchanged (``robustloss.attacks.apgd``; this class subclasses it and
reuses its single run).

With z the logits, y the TRUE label, t a target class and pi the classes sorted by
decreasing logit (z_pi1 >= z_pi2 >= ...), the objective maximised is the targeted DLR loss

    DLR_t(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

The numerator pulls the target's logit above the true class's; the denominator makes the loss
invariant to shifting and rescaling the logits (a saturated softmax cannot hide the gradient).
It needs at least 4 classes. Unlike the ``dlr`` objective of ``objectives.py`` in its targeted
form (which only knows the target and pushes down the top non-target logit), this one knows y.

The target loop (as in AutoAttack): the targets come from one clean evaluation of the model.
For target rank k = 2 .. n_target_classes + 1, the target of each sample is the class with the
k-th largest clean logit, and ``restarts`` APGD runs are made on the samples still standing
(correctly classified so far). A sample counts as fooled when it is MISCLASSIFIED (pred != y),
whatever the class: the targets only diversify the search directions. Hence, in the attack
contract, APGD-T is an untargeted attack: ``targeted`` stays False and ``targeted=True`` is
refused (APGD-T picks its own targets). Samples the model already misclassifies on the clean
images are not attacked and are returned unchanged.

Defaults and where they come from:

* ``n_iter = 100``, ``n_target_classes = 9``, ``restarts = 1`` (per target class): AutoAttack's
  standard version for L-inf and L2 (``set_version('standard')`` in the authors' release).
* ``n_target_classes`` is capped, at call time, at (number of classes) - 1, the number of wrong
  classes there are; a ``UserWarning`` says so (e.g. the default 9 on a 5-class model runs 4).
* ``alpha = 0.75``, ``rho = 0.75``, initial step 2 * eps, the checkpoints, ``random_start = True``:
  APGD's (paper, Sec. 3; see ``apgd.py``).
* ``eot = 1``: EOT as in APGD (each evaluation averages ``eot`` passes; the clean evaluation that
  picks the targets and the initially misclassified samples uses the averaged probabilities).

Reporting (the repository's contract):

* per sample the first success over all runs is returned (the first fooling iterate of that run);
  a sample never fooled returns, over all its runs, the iterate with the highest targeted DLR
  (the values of different targets share one scale: the same denominator, a logit gap in the
  numerator); a sample misclassified on the clean images returns the clean image;
* ``queries`` counts model evaluations until the returned example was found: the clean
  evaluation (1), plus, for every run the sample took part in, APGD's count (evaluations up to
  the first fooling iterate, else n_iter + 1); each evaluation is ``eot`` passes. A sample never
  fooled used (1 + n_targets * restarts * (n_iter + 1)) * eot;
* success is judged by the base class's final float32 forward pass, like every attack;
* ``objective`` is fixed to ``"dlr"`` (the DLR family, in the targeted form above): the
  objective registry holds functions of (logits, labels) only, and the targeted DLR needs both
  y and t, so the run supplies its own and the result reports ``"dlr"``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from robustloss.attacks.apgd import APGD
from robustloss.attacks.eot import eot_logits
from robustloss.attacks.objectives import Objective
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS

FIXED_OBJECTIVE = "dlr"
MIN_CLASSES = 4  # the denominator reads the 3rd and 4th largest logits


def targeted_dlr(logits: Tensor, labels: Tensor, target: Tensor) -> Tensor:
    """Croce & Hein's targeted DLR loss (Eq. 7) per sample: labels are the TRUE classes."""
    ranked = logits.sort(dim=1, descending=True).values
    own = logits.gather(1, labels[:, None]).squeeze(1)
    aimed = logits.gather(1, target[:, None]).squeeze(1)
    scale = ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12
    return -(own - aimed) / scale


def ranked_targets(logits: Tensor, n_targets: int) -> Tensor:
    """(N, n_targets): column j is the class with the (j + 2)-th largest logit of each sample.

    A stable sort, so tied logits give the same targets on every run."""
    order = logits.sort(dim=1, descending=True, stable=True).indices
    return order[:, 1 : n_targets + 1]


@ATTACKS.register("apgd-t")
class APGDT(APGD):
    """APGD-T (Croce & Hein, ICML 2020): APGD on the targeted DLR loss, one target class after
    another, against the top ``n_target_classes`` wrong classes; see the module docstring."""

    name = "apgd-t"

    def __init__(
        self,
        *,
        eps: float,
        norm: str = "linf",
        n_iter: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        random_start: bool = True,
        alpha: float = 0.75,
        rho: float = 0.75,
        targeted: bool = False,
        objective: str | None = None,
        eot: int = 1,
    ):
        if targeted:
            raise ValueError(f"{self.name} picks its own targets (the top wrong classes of each sample) and counts "
                             "any misclassification as success; it cannot take targeted=True. For a given target "
                             "use 'apgd-dlr' with targeted=True")
        if objective not in (None, FIXED_OBJECTIVE):
            raise ValueError(f"{self.name} always uses the targeted DLR loss (reported as {FIXED_OBJECTIVE!r}); "
                             f"use 'apgd' with objective={objective!r} instead")
        if int(n_target_classes) != n_target_classes or n_target_classes < 1:
            raise ValueError(f"{self.name}: n_target_classes must be an integer >= 1, got {n_target_classes}")
        super().__init__(eps=eps, norm=norm, n_iter=n_iter, restarts=restarts, random_start=random_start,
                         alpha=alpha, rho=rho, targeted=False, objective=FIXED_OBJECTIVE, eot=eot)
        self.n_target_classes = int(n_target_classes)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {"n_target_classes": self.n_target_classes}

    def _n_targets(self, num_classes: int) -> int:
        if num_classes < MIN_CLASSES:
            raise ValueError(f"{self.name}: the targeted DLR loss needs at least {MIN_CLASSES} classes, "
                             f"the model has {num_classes}")
        if self.n_target_classes > num_classes - 1:
            warnings.warn(f"{self.name}: n_target_classes={self.n_target_classes} but the model has only "
                          f"{num_classes - 1} wrong classes; running {num_classes - 1} target classes",
                          UserWarning, stacklevel=4)
        return min(self.n_target_classes, num_classes - 1)

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        # ``objective`` is the registry's "dlr", a function of (logits, labels) only: each run below
        # gets the targeted DLR with its own targets instead.
        with torch.no_grad():
            clean = eot_logits(model, x, self.eot)  # one evaluation: targets and the initial verdict
        targets = ranked_targets(clean, self._n_targets(clean.shape[1]))
        result = x.clone()
        found = clean.argmax(dim=1) != y  # already misclassified: never attacked, returned as is
        best_gain = torch.full((len(x),), float("-inf"), device=x.device)
        queries = torch.full((len(x),), self.eot, dtype=torch.int64, device=x.device)
        for column in range(targets.shape[1]):
            for _ in range(self.restarts):
                standing = (~found).nonzero().squeeze(1)  # each run attacks only the samples not yet fooled
                if len(standing) == 0:
                    return result, queries
                # _evaluate calls objective(logits, goal, targeted) with goal = y (untargeted contract);
                # the run passes each sample's target along, row by row as the batch shrinks
                x_run, hit, used, gain = self._single_run(
                    model, x[standing], y[standing], goal[standing], _targeted_dlr_objective, generator,
                    aimed=targets[standing, column])
                queries[standing] += used
                # a success always wins; otherwise keep the run that came closest (highest targeted DLR)
                better = hit | (gain > best_gain[standing])
                result[standing[better]] = x_run[better]
                best_gain[standing] = torch.maximum(best_gain[standing], gain)
                found[standing] = hit
        return result, queries


def _targeted_dlr_objective(logits: Tensor, labels: Tensor, targeted: bool, *, target: Tensor) -> Tensor:
    """``targeted_dlr`` in the objective signature APGD's single run uses (``targeted`` is always False)."""
    return targeted_dlr(logits, labels, target)


# AutoAttack as published (Croce & Hein, ICML 2020), standard version for L-inf and L2.
register_preset("apgd-t-autoattack", "apgd-t", "Croce & Hein (ICML 2020), AutoAttack standard version: APGD-T, "
                "9 target classes, 100 iterations, 1 restart per target", n_iter=100, n_target_classes=9,
                restarts=1)
