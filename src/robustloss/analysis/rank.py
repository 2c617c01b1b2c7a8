"""Misclassification rank (PC paper, Fig. 2): where do adversarial examples land?

Over a fine grid of budgets, each sample is attacked at every eps until it is first fooled;
at that eps we record the rank of its adversarial class among the clean input's softmax
probabilities (2 = the most probable wrong class). The paper's claim is that most new
adversarial examples land in the 2nd-5th most probable classes, and that PC loss, by
compacting those, pushes successes to larger eps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from robustloss.attacks.step_rule import default_step_size
from robustloss.attacks import create_attack

RANK_BINS = ("2nd", "3rd", "4th", "5th", "other")


def class_rank(clean_probs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``classes[i]`` among ``clean_probs[i]`` sorted descending (ties: lower index first)."""
    order = torch.sort(clean_probs, dim=1, descending=True, stable=True).indices
    return (order == classes[:, None]).float().argmax(dim=1) + 1


@dataclass
class RankStudy:
    eps: list[float]
    new_successes: list[int]  # samples first fooled at each eps
    rank_counts: list[dict[str, int]]  # per eps: RANK_BINS -> count among the new successes
    first_eps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) eps of first success, nan if never
    ranks: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) rank at first success, 0 if never

    def percentages(self) -> dict[str, float]:
        """Share (%) of every first success by rank bin, over the whole grid."""
        totals = {b: sum(c[b] for c in self.rank_counts) for b in RANK_BINS}
        n = sum(totals.values())
        return {b: 100.0 * v / n if n else 0.0 for b, v in totals.items()}


def _bin(rank: int) -> str:
    return RANK_BINS[rank - 2] if 2 <= rank <= 5 else "other"


def misclassification_ranks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str,
                            eps_grid: list[float], seed: int = 0, steps: int | None = None,
                            **attack_params) -> RankStudy:
    """Attack the still-unbroken, clean-correct samples at each eps of ``eps_grid`` (ascending).

    ``steps`` (iterative attacks): that many steps of 2.5 eps / steps at every eps, instead of
    the attack's fixed step size - a fine grid re-runs the attack at every eps, so a short
    attack whose step scales with the budget keeps the study affordable.
    """
    model = model.eval()
    with torch.no_grad():
        clean_probs = torch.softmax(model(x).float(), dim=1)
    correct = clean_probs.argmax(1) == y
    first_eps = np.full(len(x), np.nan)
    ranks = np.zeros(len(x), dtype=np.int64)
    standing = correct.clone()
    study = RankStudy([], [], [], first_eps, ranks)
    for eps in sorted(eps_grid):
        counts = dict.fromkeys(RANK_BINS, 0)
        index = torch.nonzero(standing).flatten()
        if len(index):
            generator = torch.Generator().manual_seed(seed)
            scaled = {"steps": steps, "step_size": default_step_size(eps, steps)} if steps is not None else {}
            result = create_attack(attack, eps=eps, **attack_params, **scaled)(model, x[index], y[index],
                                                                              generator=generator)
            fooled = result.pred != y[index]
            hit = index[fooled]
            hit_ranks = class_rank(clean_probs[hit], result.pred[fooled])
            for i, r in zip(hit.tolist(), hit_ranks.tolist()):
                first_eps[i], ranks[i] = eps, r
                counts[_bin(r)] += 1
            standing[hit] = False
        study.eps.append(float(eps))
        study.new_successes.append(sum(counts.values()))
        study.rank_counts.append(counts)
    return study
