"""DeepFool, L2 (``deepfool``).

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR 2016, Algorithm 2 (multiclass, L2). A minimum-norm attack: at the current point
x_i it linearises the classifier and steps to the nearest linearised decision boundary,

    for each candidate class k != k0 (k0 = the original class):
        w_k = grad(Z_k - Z_k0)(x_i),   f_k = (Z_k - Z_k0)(x_i)
    l   = argmin_k |f_k| / ||w_k||_2                   (the closest boundary)
    r_i = (|f_l| / ||w_l||_2 + 1e-4) * w_l / ||w_l||_2 (a step to it, 1e-4 past it)
    x_{i+1} = clip_[0,1](x + (1 + overshoot) * sum_i r_i)

until the prediction of x_{i+1} leaves k0 or ``max_iter`` linearisations are spent. The 1e-4
(an L2 distance in input units, so independent of the logits' scale) and applying the
overshoot to every iterate follow the authors' released code; the paper multiplies the final
sum by (1 + overshoot).

The original class k0 is the true label y: a sample the model already misclassifies is
returned unchanged (it is fooled at distance 0, as minimum-norm attacks report it). The
candidate classes are the ``candidates`` classes with the largest clean logits (k0 among
them), as in the authors' code; ``candidates`` >= the number of classes means all classes.
The per-class gradients are taken with one backward pass per candidate on the whole batch.

DeepFool is untargeted only (``targeted=True`` raises) and works on the logits themselves
(their linearisation is the method), so it takes no loss: ``objective`` accepts ``cw`` and
``adaptive`` only so that an evaluation plan can pass it uniformly, and results report ``cw``
(the logit margin min_k |f_k| that DeepFool drives to zero is C&W's margin).

``eps``: None runs the unbounded minimal-perturbation attack (read ``AttackResult.l2``). With
a number the final total perturbation delta is projected onto the L2 ball,
x + delta * min(1, eps / ||delta||_2), clipped to [0, 1], and success is judged on that
projected point (foolbox's semantics for minimum-norm attacks run at given epsilons). The
I-SCE paper reports DeepFool accuracies at "eps = 0.01 / 0.04" (Table 3, Table 7); those values
are taken as reported there, our eps means this projection.

Defaults and their sources:
* ``max_iter`` = 50: the authors' code; also the largest count in the I-SCE tables (DF_50).
* ``overshoot`` = 0.02: Moosavi-Dezfooli et al. 2016 (eta = 0.02 in their experiments; also the
  default of their released code).
* ``candidates`` = 10: the authors' code (num_classes = 10); all classes for 10-class data.

``queries``: forward passes a sample went through until its returned point was evaluated,
i.e. linearisations + 1 (the last forward confirms the flip); max_iter + 1 for samples never
fooled, 1 for samples misclassified from the start. Each linearisation also costs
``min(candidates, classes) - 1`` backward passes, not counted. With ``eot`` every forward counts eot.

``eot`` (Expectation over Transformation, Athalye et al. 2018; ``robustloss.attacks.eot``): against a
randomised model (``robustloss.defenses``) one forward pass linearises one random draw, and a flip may
fool that draw only. With ``eot > 1`` every linearisation runs ``eot`` forward passes at the iterate and
linearises their mean logits: f_k and w_k = grad f_k are averaged over the passes (one backward per
candidate through all of them). The *raw* logits are averaged here, not log-mean-softmax: the mean of
linear functions is linear, so the averaged f_k and the averaged gradients w_k are the value and the
exact gradient of one function, E[Z_k - Z_k0], and the step to its linearised boundary is consistent;
log-mean-softmax is nonlinear in the passes, and its gradient is not the average of theirs. The
decisions (candidate classes, "has the prediction left k0?") use the averaged class probabilities
(log-mean-softmax) like the other attacks' success tests, so the attack does not stop on an iterate that
fooled one lucky draw. The passes' graphs of one linearisation are held together (the decisions come
before the gradients), so memory grows with eot; use smaller batches for large eot. ``eot = 1`` is
exactly the plain attack.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.attacks.base import Attack
from robustloss.attacks.eot import check_eot, eot_hyperparameter, mean_logits
from robustloss.attacks.objectives import Objective
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS

# Overstep past the linearised boundary, in L2 input units (the authors' code).
_PAST_BOUNDARY = 1e-4
# Guards the division by ||w_k|| where a gradient vanishes (dead ReLUs, saturated logits).
_TINY = 1e-12


def project_l2(x: Tensor, x_adv: Tensor, eps: float) -> Tensor:
    """x + delta * min(1, eps / ||delta||_2), clipped to [0, 1] (only shortens delta: x is in
    the box, so scaling a box-feasible delta towards 0 keeps it feasible)."""
    delta = x_adv - x
    norm = delta.flatten(1).norm(dim=1).clamp_min(_TINY)
    scale = (eps / norm).clamp_max(1.0).view(-1, *([1] * (x.dim() - 1)))
    return (x + delta * scale).clamp(0, 1)


@ATTACKS.register("deepfool")
class DeepFool(Attack):
    name = "deepfool"
    norm = "l2"

    def __init__(
        self,
        *,
        eps: float | None = None,
        max_iter: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        targeted: bool = False,
        objective: str = "cw",
        eot: int = 1,
    ):
        if targeted:
            raise ValueError("deepfool is untargeted only (it steps to the nearest boundary, whichever class)")
        if objective not in ("cw", "adaptive"):
            raise ValueError(f"deepfool linearises the logits and takes no loss; objective must be 'cw' or "
                             f"'adaptive', got {objective!r}")
        super().__init__(eps=eps, targeted=False, objective="cw")
        if int(max_iter) != max_iter or max_iter < 1:
            raise ValueError(f"deepfool: max_iter must be an integer >= 1, got {max_iter}")
        if not (overshoot >= 0 and math.isfinite(overshoot)):
            raise ValueError(f"deepfool: overshoot must be a finite number >= 0, got {overshoot}")
        if int(candidates) != candidates or candidates < 2:
            raise ValueError(f"deepfool: candidates must be an integer >= 2 (the original class and one other), "
                             f"got {candidates}")
        self.max_iter, self.overshoot, self.candidates = int(max_iter), float(overshoot), int(candidates)
        self.eot = check_eot(self.name, eot)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "max_iter": self.max_iter, "overshoot": self.overshoot, "candidates": self.candidates,
        } | eot_hyperparameter(self.eot)

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        n = len(x)
        x_adv = x.clone()
        r_total = torch.zeros_like(x)
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        queries = torch.zeros(n, dtype=torch.int64, device=x.device)
        classes = None  # per-sample candidate classes, fixed from the clean logits

        # Iteration i evaluates x_i; the last forward only checks the final iterate.
        for i in range(self.max_iter + 1):
            index = active.nonzero().squeeze(1)
            point = x_adv[index].requires_grad_(True)
            passes = [model(point) for _ in range(self.eot)]  # graphs kept: the gradients come after the decisions
            queries[index] += self.eot
            # decisions on the averaged probabilities; the linearisation on the averaged raw logits (see
            # the module docstring: the mean of the passes' logits is linear, so f and w stay consistent)
            decided = mean_logits([logits.detach() for logits in passes])
            logits = passes[0] if self.eot == 1 else torch.stack(passes).mean(dim=0)
            if classes is None:
                k = min(self.candidates, logits.shape[1])
                # Candidates: the top-k clean classes, with the original class y first.
                own_first = decided.masked_fill(F.one_hot(y, logits.shape[1]).bool(), math.inf)
                classes = own_first.topk(k, dim=1).indices
            still = decided.argmax(dim=1) == y[index]
            active[index[~still]] = False
            if i == self.max_iter or not still.any():
                break
            step = self._step(logits, point, classes[index])
            index = index[still]
            r_total[index] += step[still]
            x_adv[index] = (x[index] + (1 + self.overshoot) * r_total[index]).clamp(0, 1)

        if self.eps is not None:
            x_adv = project_l2(x, x_adv, self.eps)
        return x_adv, queries

    def _step(self, logits: Tensor, point: Tensor, classes: Tensor) -> Tensor:
        """r_i for every row of ``point``: the step to the nearest linearised boundary."""
        own = logits.gather(1, classes[:, :1]).squeeze(1)
        best_distance = torch.full_like(own, math.inf)
        best_step = torch.zeros_like(point)
        others = classes.shape[1] - 1
        for j in range(1, classes.shape[1]):
            f = logits.gather(1, classes[:, j:j + 1]).squeeze(1) - own
            # Samples are independent (eval mode), so one backward on the batch sum gives
            # every sample's own gradient.
            (w,) = torch.autograd.grad(f.sum(), point, retain_graph=j < others)
            w_norm = w.flatten(1).norm(dim=1).clamp_min(_TINY)
            distance = f.detach().abs() / w_norm
            closer = distance < best_distance
            best_distance = torch.where(closer, distance, best_distance)
            step = ((distance + _PAST_BOUNDARY) / w_norm).view(-1, *([1] * (point.dim() - 1))) * w
            best_step = torch.where(closer.view(-1, *([1] * (point.dim() - 1))), step, best_step)
        return best_step.detach()


# The I-SCE paper's DeepFool tables (Table 3: MNIST DF_10 / DF_50, CIFAR-10 DF_3 / DF_20).
for _dataset, _iters in (("mnist", 10), ("mnist", 50), ("cifar", 3), ("cifar", 20)):
    register_preset(
        f"deepfool-isce-{_dataset}-{_iters}", "deepfool",
        f"I-SCE paper, Table 3: DeepFool with {_iters} iterations on {'MNIST' if _dataset == 'mnist' else 'CIFAR-10'}; "
        "overshoot 0.02 (Moosavi-Dezfooli et al. 2016)",
        max_iter=_iters, overshoot=0.02,
    )
