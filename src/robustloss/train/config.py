"""What defines a training run. Defaults are the PC paper's (Experiments section):
Adam, learning rate 0.01, batch size 256; the recipe is a list of (loss, epochs) phases.
"""

from __future__ import annotations

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
class TrainConfig:
    dataset: str = "mnist-5k"
    model: str = "lenet5"
    model_params: dict[str, Any] = field(default_factory=dict)
    recipe: list[Phase] = field(default_factory=lambda: [Phase("ce", 20)])
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    batch_size: int = 256
    augment: Literal["auto", "none", "crop", "crop-flip"] = "auto"  # auto: crop+flip for colour datasets only
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.recipe:
            raise ConfigError("recipe: needs at least one phase, e.g. [{loss: ce, epochs: 10}]")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

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
