"""What defines a training run. Defaults are the PC paper's (Experiments section):
Adam, learning rate 0.01, batch size 256; the recipe is a list of (loss, epochs) phases.

Optional adversarial training (``adversarial:``) follows the papers' setups: the PC paper
(Table 5) mixes clean and adversarial examples 1:1 in every mini-batch, crafted by FGSM with
eps ~ U[0.1, 0.3] on gray datasets and by 5-step PGD with eps ~ U[0, 0.1] on CIFAR-10; the
MMC paper (Table 1) uses 10-step PGD at eps = 8/255, untargeted or with random targets.
New fields default to None/off so that configs which do not set them hash as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from robustloss.errors import ConfigError


@dataclass
class Phase:
    loss: str
    epochs: int
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"phase {self.loss!r}: epochs must be >= 1, got {self.epochs}")


@dataclass
class OptimizerConfig:
    name: Literal["adam", "sgd"] = "adam"
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=list)  # epochs (over the whole recipe) where lr *= gamma
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr must be > 0, got {self.lr}")
        if sorted(self.milestones) != list(self.milestones):
            raise ConfigError(f"optimizer.milestones must be increasing, got {self.milestones}")


@dataclass
class AdversarialConfig:
    """How each training mini-batch is partly replaced by adversarial examples (L-inf)."""

    method: Literal["fgsm", "pgd"] = "pgd"
    # A number, or [lo, hi]: every example draws its own eps uniformly from [lo, hi].
    eps: float | list[float] = 0.3
    steps: int | None = None  # None: 1 for fgsm, 10 for pgd
    step_size: float | None = None  # None: eps for fgsm, 2.5 * eps / steps for pgd (per example)
    random_start: bool | None = None  # None: False for fgsm, True for pgd
    ratio: float = 0.5  # fraction of each batch made adversarial: 0.5 = the papers' 1:1 mix, 1.0 = Madry
    # "loss" (the phase's training loss, per sample) or an attack objective name ("ce", "cw",
    # "adaptive", ...). A loss that is flat where it is satisfied (a hinge like PC's) gives no
    # gradient there, and those examples stay clean; "ce" or "adaptive" seldom vanish like that.
    objective: str = "loss"
    targeted: bool = False  # random wrong-class targets; the attack descends toward them
    phases: list[int] | None = None  # recipe phase indices trained adversarially; None = all

    def __post_init__(self) -> None:
        self.eps = self._checked_eps(self.eps)
        if not (0 < self.ratio <= 1):
            raise ConfigError(f"adversarial.ratio must be in (0, 1], got {self.ratio}")
        if self.steps is not None:
            if self.steps < 1:
                raise ConfigError(f"adversarial.steps must be >= 1, got {self.steps}")
            if self.method == "fgsm" and self.steps != 1:
                raise ConfigError(f"adversarial.steps: fgsm takes exactly one step, got {self.steps}; "
                                  f"use method: pgd for iterative attacks")
        if self.step_size is not None and not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ConfigError(f"adversarial.step_size must be a finite number > 0, got {self.step_size}")
        if self.phases is not None and any(i < 0 for i in self.phases):
            raise ConfigError(f"adversarial.phases: indices must be >= 0, got {self.phases}")
        self._check_objective()

    @staticmethod
    def _checked_eps(eps: float | list[float]) -> float | list[float]:
        bounds = list(eps) if isinstance(eps, (list, tuple)) else [eps]
        if len(bounds) not in (1, 2):
            raise ConfigError(f"adversarial.eps: expected a number or [lo, hi], got {eps!r}")
        if any(isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b < 0
               for b in bounds):
            raise ConfigError(f"adversarial.eps: bounds must be finite numbers >= 0, got {eps!r}")
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            raise ConfigError(f"adversarial.eps: range must be ordered [lo, hi] with lo <= hi, got {eps!r}")
        # Normalised to floats so the same budget always serialises (and hashes) the same way.
        return [float(b) for b in bounds] if isinstance(eps, (list, tuple)) else float(eps)

    def _check_objective(self) -> None:
        if self.objective == "loss":
            return
        from robustloss.attacks.objectives import check_objective_name

        try:
            check_objective_name(self.objective)
        except KeyError as err:
            raise ConfigError(f"adversarial.objective: {err}; also accepted: 'adaptive', or 'loss' "
                              f"for the phase's training loss") from None

    @property
    def eps_range(self) -> tuple[float, float]:
        if isinstance(self.eps, list):
            return self.eps[0], self.eps[1]
        return self.eps, self.eps

    @property
    def resolved_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return 1 if self.method == "fgsm" else 10

    @property
    def resolved_random_start(self) -> bool:
        return self.method == "pgd" if self.random_start is None else self.random_start

    def applies_to(self, phase_index: int) -> bool:
        return self.phases is None or phase_index in self.phases


@dataclass
class TrainConfig:
    dataset: str = "mnist-5k"
    model: str = "lenet5"
    model_params: dict[str, Any] = field(default_factory=dict)
    recipe: list[Phase] = field(default_factory=lambda: [Phase("ce", 20)])
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    batch_size: int = 256
    augment: Literal["auto", "none", "crop", "crop-flip"] = "auto"  # auto: crop+flip for colour datasets only
    seed: int = 0
    # Train on a class-stratified subset of this many training samples (CI-sized smoke runs).
    max_train_samples: int | None = None
    adversarial: AdversarialConfig | None = None

    def __post_init__(self) -> None:
        if not self.recipe:
            raise ConfigError("recipe: needs at least one phase, e.g. [{loss: ce, epochs: 10}]")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError(f"max_train_samples must be >= 1 (or null for all), got {self.max_train_samples}")
        phases = self.adversarial.phases if self.adversarial is not None else None
        if phases is not None and any(i >= len(self.recipe) for i in phases):
            raise ConfigError(f"adversarial.phases: {phases} names a phase past the recipe's "
                              f"{len(self.recipe)} phases (indices start at 0)")

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.recipe)

    def phase_at(self, epoch: int) -> tuple[int, Phase]:
        """(phase index, phase) that trains the 0-based ``epoch``."""
        end = 0
        for index, phase in enumerate(self.recipe):
            end += phase.epochs
            if epoch < end:
                return index, phase
        raise IndexError(f"epoch {epoch} is past the recipe's {self.total_epochs} epochs")


def parse_recipe(text: str) -> list[Phase]:
    """``"ce:10,pc:10"`` -> [Phase("ce", 10), Phase("pc", 10)] (the CLI form of a recipe)."""
    phases = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        loss, sep, epochs = part.partition(":")
        if not sep or not epochs.strip().isdigit():
            raise ConfigError(f"recipe: expected LOSS:EPOCHS[,LOSS:EPOCHS...], e.g. 'ce:10,pc:10'; got {part!r}")
        phases.append(Phase(loss.strip(), int(epochs)))
    if not phases:
        raise ConfigError("recipe: empty; expected e.g. 'ce:10,pc:10'")
    return phases
