"""What defines a training run. Defaults are the PC paper's (Experiments section):
Adam, learning rate 0.01, batch size 256; the recipe is a list of (loss, epochs) phases.

Optional adversarial training (``adversarial:``) follows the papers' setups: the PC paper
(Table 5) mixes clean and adversarial examples 1:1 in every mini-batch, crafted by FGSM with
eps ~ U[0.1, 0.3] on gray datasets and by 5-step PGD with eps ~ U[0, 0.1] on CIFAR-10; the
MMC paper (Table 1) uses 10-step PGD at eps = 8/255, untargeted or with random targets.
Beyond the papers: FGSM with a random start ("fast" AT, Wong et al. 2020) guarded against
catastrophic overfitting (``guard:``), and TRADES (Zhang et al. 2019).
New fields default to None/off so that configs which do not set them hash as before.

Speed settings for one device (``robustloss.train.speed``): ``data_on_device`` keeps the
training split on the GPU when it fits, so batches are indexed and augmented there; ``precision:
bf16`` runs forward passes under bfloat16 autocast (losses stay float32); ``channels_last`` and
``compile`` are opt-in because their benefit depends on the model and the hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from robustloss.attacks.objectives import check_objective_name
from robustloss.config import check_linf_budget
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
class GuardConfig:
    """Catastrophic-overfitting guard: after every epoch, PGD accuracy on a held-out batch.

    Single-step AT can suddenly "overfit catastrophically" (Wong et al. 2020): FGSM accuracy
    shoots up while PGD accuracy collapses to about zero within a few hundred steps. The guard
    holds ``held_out`` training samples back (class-stratified, never trained on), attacks
    them with ``steps``-step PGD after each epoch, and when the accuracy falls more than
    ``drop`` (absolute) below the best epoch of the current phase it either stops, keeping
    the best epoch's weights, or rolls back to them, scales the learning rate by
    ``lr_factor`` and goes on (at most ``max_rollbacks`` times, then stops).
    """

    action: Literal["stop", "rollback"] = "stop"
    held_out: int = 512
    eps: float | None = None  # None: the top of adversarial.eps
    steps: int = 10
    step_size: float | None = None  # None: 2.5 * eps / steps
    objective: str = "adaptive"
    drop: float = 0.2
    lr_factor: float = 0.5
    max_rollbacks: int = 3

    def __post_init__(self) -> None:
        if self.held_out < 1:
            raise ConfigError(f"adversarial.guard.held_out must be >= 1, got {self.held_out}")
        if self.steps < 1:
            raise ConfigError(f"adversarial.guard.steps must be >= 1, got {self.steps}")
        if not (0 < self.drop <= 1):
            raise ConfigError(f"adversarial.guard.drop must be in (0, 1] (an accuracy drop), got {self.drop}")
        if not (0 < self.lr_factor <= 1):
            raise ConfigError(f"adversarial.guard.lr_factor must be in (0, 1], got {self.lr_factor}")
        if self.max_rollbacks < 0:
            raise ConfigError(f"adversarial.guard.max_rollbacks must be >= 0, got {self.max_rollbacks}")
        for key in ("eps", "step_size"):
            value = getattr(self, key)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"adversarial.guard.{key} must be a finite number > 0, got {value}")
        check_objective_name(self.objective, where="adversarial.guard.objective")


ADVERSARIAL_METHODS = ("fgsm", "fgsm-rs", "pgd", "trades")


@dataclass
class AdversarialConfig:
    """How each training mini-batch is partly replaced by adversarial examples (L-inf).

    ``fgsm-rs`` is FGSM from a uniform random start with step 1.25 eps ("fast" AT); ``trades``
    trains on the clean batch with loss + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL.
    """

    method: Literal["fgsm", "fgsm-rs", "pgd", "trades"] = "pgd"
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
    beta: float | None = None  # trades only: weight of the KL term (None: 6.0, Zhang et al.'s CIFAR-10 value)
    guard: GuardConfig | None = None  # catastrophic-overfitting guard (any method; meant for fgsm-rs)

    def __post_init__(self) -> None:
        self.eps = self._checked_eps(self.eps)
        if self.method == "trades":
            if self.ratio != 0.5 or self.objective != "loss" or self.targeted:
                raise ConfigError("adversarial: trades attacks every example with its own KL objective; "
                                  "ratio, objective and targeted do not apply to it")
            if self.beta is not None and not (self.beta >= 0 and math.isfinite(self.beta)):
                raise ConfigError(f"adversarial.beta must be a finite number >= 0, got {self.beta}")
        elif self.beta is not None:
            raise ConfigError(f"adversarial.beta: only method trades takes beta (method is {self.method!r})")
        if not (0 < self.ratio <= 1):
            raise ConfigError(f"adversarial.ratio must be in (0, 1], got {self.ratio}")
        if self.steps is not None:
            if self.steps < 1:
                raise ConfigError(f"adversarial.steps must be >= 1, got {self.steps}")
            if self.method in ("fgsm", "fgsm-rs") and self.steps != 1:
                raise ConfigError(f"adversarial.steps: {self.method} takes exactly one step, got {self.steps}; "
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
        for bound in bounds:  # training is L-inf; a bound above 1 is almost surely in 0-255 units
            check_linf_budget(bound, "adversarial.eps")
        # Normalised to floats so the same budget always serialises (and hashes) the same way.
        return [float(b) for b in bounds] if isinstance(eps, (list, tuple)) else float(eps)

    def _check_objective(self) -> None:
        # "loss": the phase's training loss (robustloss.train.adversarial.TrainingLossObjective)
        check_objective_name(self.objective, also=("loss",), where="adversarial.objective")

    @property
    def eps_range(self) -> tuple[float, float]:
        if isinstance(self.eps, list):
            return self.eps[0], self.eps[1]
        return self.eps, self.eps

    @property
    def resolved_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return 1 if self.method in ("fgsm", "fgsm-rs") else 10

    @property
    def resolved_random_start(self) -> bool:
        return self.method != "fgsm" if self.random_start is None else self.random_start

    @property
    def resolved_beta(self) -> float:
        return 6.0 if self.beta is None else self.beta

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
    # auto: the training split goes to the GPU when it takes at most half of its free memory
    # (on CPU it already is in the memory the model reads); never: batches are copied from the host.
    data_on_device: Literal["auto", "always", "never"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast forward passes; losses stay float32
    channels_last: bool = False  # NHWC memory format for model and batches (faster convolutions on many GPUs)
    compile: bool = False  # torch.compile the model's backbone for training (first steps slow while it compiles)

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


def parse_recipe(text: str, where: str = "recipe") -> list[Phase]:
    """``"ce:10,pc:10"`` -> [Phase("ce", 10), Phase("pc", 10)] (the CLI form of a recipe).

    An empty phase (``"ce:2,,pc:1"``) is refused rather than skipped: it is more likely a phase lost
    while editing than an intended shorter recipe."""
    expected = "expected LOSS:EPOCHS[,LOSS:EPOCHS...], e.g. ce:10,pc:10"
    parts = [p.strip() for p in text.split(",")]
    phases = []
    for i, part in enumerate(parts):
        if not part:
            if len(parts) == 1:
                raise ConfigError(f"{where}: empty; {expected}")
            raise ConfigError(f"{where} {text!r}: phase {i + 1} of {len(parts)} is empty; {expected}")
        loss, sep, epochs = part.partition(":")
        if not sep or not epochs.strip().isdigit():
            raise ConfigError(f"{where}: {expected}; got {part!r}")
        phases.append(Phase(loss.strip(), int(epochs)))
    return phases
