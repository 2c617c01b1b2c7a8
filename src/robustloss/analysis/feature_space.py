"""Feature space of a 2-D or 3-D feature layer, with PGD trajectories (MMC paper, Fig. 3b).

With ``feature_dim`` 2 or 3 (``create_model(..., feature_dim=2)``, I-SCE Fig. 4 uses 3) the
features z can be plotted as they are, no t-SNE in between. The MMC paper does this on MNIST
and follows a few clean inputs through the iterations of PGD (eps 0.3, step 0.01): the
adaptive objective (the distance to the true center, for MMC) walks the features out of their
cluster far more directly than cross-entropy does.

Trajectories come from the library's own attack, not from a re-implementation: PGD with
``random_start=False`` and ``early_stop=False`` is deterministic, so the k-step attack returns
exactly the k-th iterate of the K-step one. Running it for k = 1..K costs K(K+1)/2 steps on a
handful of points, which is nothing next to the test-set forward pass.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from robustloss.attacks.step_rule import default_step_size
from robustloss.analysis.features import penultimate_features
from robustloss.attacks import ATTACKS, AttackBudgetWarning, create_attack
from robustloss.attacks.iterative import IterativeGradientAttack
from robustloss.attacks.objectives import resolve_objective
from robustloss.data.split import ImageSplit
from robustloss.errors import ConfigError

PLOTTABLE_DIMS = (2, 3)
DEFAULT_OBJECTIVES = ("ce", "adaptive")


def require_plottable_features(model: nn.Module) -> int:
    """The model's feature dimension if it is 2 or 3; otherwise a ConfigError saying how to get one."""
    dim = getattr(model, "feature_dim", None)
    if dim in PLOTTABLE_DIMS:
        return int(dim)
    raise ConfigError(
        f"feature-space plots need a model whose feature layer has 2 or 3 dimensions; this model's features "
        f"have {dim}. Train one with a linear bottleneck: `robustloss train ... --model-param feature_dim=2`, "
        f"`--set train.model_params.feature_dim=2` on an experiment config, or "
        f"TrainConfig(model_params={{'feature_dim': 2}}) in Python (3 for a 3-D plot). "
        f"For models with high-dimensional features use `robustloss analyze embedding` (t-SNE) instead."
    )


def trajectory_attacks() -> list[str]:
    """Attacks whose k-step run is the prefix of their K-step run: the iterative gradient family."""
    return [name for name in ATTACKS.names()
            if inspect.isclass(ATTACKS.get(name)) and issubclass(ATTACKS.get(name), IterativeGradientAttack)
            and "steps" in ATTACKS.parameters(name)]


def _deterministic_attack(attack: str, *, eps: float, steps: int, step_size: float, objective: str):
    if attack not in trajectory_attacks():
        raise ConfigError(f"feature trajectories need an iterative gradient attack whose iterates can be replayed; "
                          f"got {attack!r}, valid: {', '.join(trajectory_attacks())}")
    params = {"eps": eps, "steps": steps, "step_size": step_size, "objective": objective}
    accepted = ATTACKS.parameters(attack)
    # No random start and no early stop: the run is a pure function of (x, steps), so k steps replay a prefix.
    params |= {k: False for k in ("random_start", "early_stop") if k in accepted}
    return create_attack(attack, **params)


@dataclass
class FeatureTrajectories:
    """The features of a few inputs at every iterate of one attack; iterate 0 is the clean input."""

    objective: str  # as requested: "ce", "adaptive", ...
    resolved_objective: str  # what "adaptive" became for this model
    indices: np.ndarray  # (P,) test-split indices of the attacked inputs
    labels: np.ndarray  # (P,)
    features: np.ndarray  # (P, K + 1, d)
    predictions: np.ndarray  # (P, K + 1) the model's class at each iterate
    distances: np.ndarray  # (P, K + 1) pixel-space distance to the clean input, in the attack's norm
    norm: str  # "linf" or "l2"

    @property
    def steps(self) -> int:
        return self.features.shape[1] - 1

    @property
    def fooled(self) -> np.ndarray:
        """(P,) bool: the last iterate is misclassified."""
        return self.predictions[:, -1] != self.labels


def attack_iterates(
    model: nn.Module, x: Tensor, y: Tensor, *, attack: str = "pgd", eps: float = 0.3, steps: int = 20,
    step_size: float | None = None, objective: str = "ce",
) -> tuple[Tensor, str]:
    """((P, K+1, C, H, W) images: x itself, then the iterate after each of the K = ``steps`` steps;
    the attack's norm). ``step_size`` None: 2.5 * eps / steps (Madry et al.'s rule of thumb)."""
    if steps < 1:
        raise ConfigError(f"trajectory steps must be >= 1, got {steps}")
    step_size = default_step_size(eps, steps) if step_size is None else float(step_size)
    final = _deterministic_attack(attack, eps=eps, steps=steps, step_size=step_size, objective=objective)
    with warnings.catch_warnings():
        # Shorter prefixes cannot reach eps by design; only the full run's warning means something.
        warnings.simplefilter("ignore", AttackBudgetWarning)
        prefixes = [_deterministic_attack(attack, eps=eps, steps=k, step_size=step_size, objective=objective)
                    for k in range(1, steps)]
    iterates = [x] + [run(model, x, y).x_adv for run in [*prefixes, final]]
    return torch.stack(iterates, dim=1), final.norm


def feature_trajectories(
    model: nn.Module, x: Tensor, y: Tensor, *, attack: str = "pgd", eps: float = 0.3, steps: int = 20,
    step_size: float | None = None, objective: str = "ce",
) -> FeatureTrajectories:
    """The features of ``attack``'s iterates from each input; ``indices`` are positions in x."""
    images, norm = attack_iterates(model, x, y, attack=attack, eps=eps, steps=steps, step_size=step_size,
                                   objective=objective)
    z = penultimate_features(model, images.flatten(0, 1))
    with torch.no_grad():
        pred = model.head(z).argmax(1)
    delta = (images - x[:, None]).flatten(2)
    distances = delta.abs().amax(2) if norm == "linf" else delta.norm(dim=2)
    shape = images.shape[:2]
    return FeatureTrajectories(
        objective=objective, resolved_objective=resolve_objective(objective, model),
        indices=np.arange(len(x)), labels=y.cpu().numpy(), features=z.view(*shape, -1).cpu().numpy(),
        predictions=pred.view(shape).cpu().numpy(), distances=distances.cpu().numpy(), norm=norm,
    )


def choose_points(labels: np.ndarray, correct: np.ndarray, points: int, seed: int) -> np.ndarray:
    """Indices of ``points`` correctly classified samples from as many different classes as possible
    (classes in a seeded random order, a seeded random member of each)."""
    rng = np.random.default_rng(seed)
    pools = {int(c): list(rng.permutation(np.flatnonzero((labels == c) & correct)))
             for c in rng.permutation(np.unique(labels))}
    chosen: list[int] = []
    while len(chosen) < points and any(pools.values()):
        for pool in pools.values():
            if pool and len(chosen) < points:
                chosen.append(int(pool.pop(0)))
    if not chosen:
        raise ValueError("the model classifies no test sample correctly: there is no clean point to attack")
    return np.asarray(chosen)


def centers_in_feature_space(model: nn.Module) -> np.ndarray | None:
    """(K, d) class centers of a center-based head when they live in the feature space itself
    (MMC with embed_dim=None, LGM's means); None otherwise (e.g. behind MMC's 256-d embedding)."""
    head = getattr(model, "head", None)
    if not isinstance(getattr(head, "embed", nn.Identity()), nn.Identity):
        return None
    for name in ("centers", "means"):
        value = getattr(head, name, None)
        if isinstance(value, Tensor) and value.dim() == 2 and value.shape[1] == getattr(model, "feature_dim", -1):
            return value.detach().float().cpu().numpy()
    return None


@dataclass
class FeatureSpaceStudy:
    features: np.ndarray  # (n, d) test features
    labels: np.ndarray  # (n,)
    predictions: np.ndarray  # (n,)
    trajectories: dict[str, FeatureTrajectories]  # objective as requested -> its trajectories
    attack: str
    eps: float
    step_size: float
    trained_with: str | None = None
    centers: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]


def feature_space_study(
    model: nn.Module,
    split: ImageSplit,
    *,
    points: int = 6,
    attack: str = "pgd",
    eps: float = 0.3,
    steps: int = 20,
    step_size: float | None = None,
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FeatureSpaceStudy:
    """Test features of a 2-D/3-D feature model, and the trajectories of ``points`` clean-correct
    inputs through ``steps`` iterations of ``attack`` for each objective."""
    require_plottable_features(model)
    if points < 1:
        raise ConfigError(f"points must be >= 1, got {points}")
    model = model.to(device).eval()
    x, y = split.batch(slice(0, len(split)))
    x, y = x.to(device), y.to(device)
    z = penultimate_features(model, x)
    with torch.no_grad():
        pred = model.head(z).argmax(1)
    labels, predictions = y.cpu().numpy(), pred.cpu().numpy()
    chosen = choose_points(labels, predictions == labels, points, seed)
    step_size = default_step_size(eps, steps) if step_size is None else float(step_size)
    index = torch.as_tensor(chosen, device=x.device)
    trajectories = {}
    for objective in objectives:
        t = feature_trajectories(model, x[index], y[index], attack=attack, eps=eps, steps=steps,
                                 step_size=step_size, objective=objective)
        t.indices = chosen  # positions in the test split, not in the attacked batch
        trajectories[objective] = t
    return FeatureSpaceStudy(
        features=z.cpu().numpy(), labels=labels, predictions=predictions, trajectories=trajectories, attack=attack,
        eps=eps, step_size=step_size, trained_with=getattr(model, "trained_with", None),
        centers=centers_in_feature_space(model),
    )


def trajectory_rows(label: str, study: FeatureSpaceStudy) -> list[dict]:
    """One CSV row per (objective, point, iterate)."""
    rows = []
    axes = [f"z{i + 1}" for i in range(study.feature_dim)]
    for objective, t in study.trajectories.items():
        for p in range(len(t.indices)):
            for step in range(t.steps + 1):
                rows.append({"run": label, "objective": objective, "resolved_objective": t.resolved_objective,
                             "point": p, "test_index": int(t.indices[p]), "label": int(t.labels[p]), "step": step,
                             **{a: float(v) for a, v in zip(axes, t.features[p, step])},
                             "prediction": int(t.predictions[p, step]),
                             f"{t.norm}_distance": float(t.distances[p, step])})
    return rows


def feature_rows(label: str, study: FeatureSpaceStudy) -> list[dict]:
    """One CSV row per test sample: its features, class and prediction."""
    axes = [f"z{i + 1}" for i in range(study.feature_dim)]
    return [{"run": label, "test_index": i, "label": int(t), "prediction": int(p), **dict(zip(axes, map(float, f)))}
            for i, (f, t, p) in enumerate(zip(study.features, study.labels, study.predictions))]
