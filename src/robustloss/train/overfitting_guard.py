"""Catastrophic-overfitting guard for adversarial training (see ``GuardConfig`` for the policy).

Single-step adversarial training ("fast" AT: FGSM from a random start) can collapse within
an epoch: the model learns to defeat the one-step attack it trains on while its accuracy
under a multi-step attack falls to about zero (Wong et al. 2020, Sec. 5). Watching the
training loss or the FGSM accuracy does not show it - both look better than ever - so the
guard measures what matters: PGD accuracy on training samples held out from training.

After every epoch of an adversarial phase the trainer calls ``after_epoch``:

* the best epoch of the current phase so far (highest held-out PGD accuracy) is kept in
  ``checkpoints/guard-best.pt`` (weights, optimizer and loss state, written atomically);
* a fall of more than ``drop`` below that best is a collapse: ``stop`` restores the best
  weights and ends training; ``rollback`` restores the best state, scales the learning rate
  by ``lr_factor`` for the rest of the run and continues, until ``max_rollbacks`` is used up.

The guard's own state (best accuracy and epoch, learning-rate scale, rollbacks, stopped)
travels in the trainer's ``last.pt`` so a killed run resumes with the same decisions.
The held-out PGD uses a fixed seed, so the measurement itself is deterministic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustloss.attacks.step_rule import default_step_size
from robustloss import distributed
from robustloss.attacks import create_attack
from robustloss.checkpoint import atomic_save, safe_load
from robustloss.data import Dataset
from robustloss.data.split import ImageSplit
from robustloss.data.stratified import stratified_indices
from robustloss.losses import Loss
from robustloss.models.classifier import Classifier
from robustloss.train.config import AdversarialConfig, GuardConfig

BEST_CHECKPOINT = Path("checkpoints") / "guard-best.pt"


def split_held_out(data: Dataset, n: int) -> tuple[Dataset, ImageSplit]:
    """(data with the held-out samples removed from train, the held-out split), deterministic
    and class-stratified so a small held-out batch still covers every class."""
    labels = data.train.labels
    if n >= len(labels):
        raise ValueError(f"adversarial.guard.held_out ({n}) must be smaller than the training set ({len(labels)})")
    held = stratified_indices(labels, n)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held] = False
    train = data.train.subset(torch.nonzero(keep).flatten())
    return dataclasses.replace(data, train=train), data.train.subset(held)


@dataclass
class GuardState:
    phase: int = -1  # the recipe phase the best epoch belongs to (heads may differ between phases)
    best_accuracy: float = -1.0
    best_epoch: int = 0
    lr_scale: float = 1.0
    rollbacks: int = 0
    stopped: bool = False


@dataclass
class GuardDecision:
    accuracy: float  # held-out PGD accuracy after this epoch
    event: str  # "best" (new best kept), "ok", "rollback" or "stop"


class OverfittingGuard:
    def __init__(self, config: GuardConfig, adversarial: AdversarialConfig, held_out: ImageSplit,
                 run_dir: Path, seed: int, batch_size: int = 500):
        self.config = config
        self.held_out = held_out
        self.best_path = run_dir / BEST_CHECKPOINT
        self.seed = seed
        self.batch_size = batch_size
        self.eps = config.eps if config.eps is not None else adversarial.eps_range[1]
        if self.eps <= 0:
            raise ValueError("adversarial.guard: the attack budget is 0 (adversarial.eps tops at 0); set guard.eps")
        self.step_size = config.step_size if config.step_size is not None else default_step_size(self.eps, config.steps)
        self.state = GuardState()

    def held_out_accuracy(self, model: Classifier) -> float:
        """Accuracy under ``steps``-step PGD (random start, fixed seed) on the held-out samples."""
        attack = create_attack("pgd", eps=self.eps, steps=self.config.steps, step_size=self.step_size,
                               random_start=True, objective=self.config.objective)
        generator = torch.Generator().manual_seed(self.seed)
        device = next(model.parameters()).device
        correct = 0
        for start in range(0, len(self.held_out), self.batch_size):
            x, y = self.held_out.batch(slice(start, start + self.batch_size))
            x, y = x.to(device), y.to(device)
            result = attack(model, x, y, generator=generator)
            correct += int((result.pred == y).sum())
        return correct / len(self.held_out)

    def after_epoch(self, epoch: int, phase: int, model: Classifier, optimizer: torch.optim.Optimizer,
                    loss_fn: Loss) -> GuardDecision:
        """Measure, keep the best state, and on a collapse restore it (``epoch`` is 1-based)."""
        accuracy = self.held_out_accuracy(model)
        state = self.state
        if phase != state.phase:  # a new phase may have a new head: compare only within a phase
            state.phase, state.best_accuracy = phase, -1.0
        if accuracy > state.best_accuracy:
            state.best_accuracy, state.best_epoch = accuracy, epoch
            if not distributed.is_main():  # every rank holds the same weights; rank 0 keeps the file
                return GuardDecision(accuracy, "best")
            atomic_save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "loss_state": loss_fn.state_dict(), "epoch": epoch, "accuracy": accuracy},
                        self.best_path)
            return GuardDecision(accuracy, "best")
        if accuracy >= state.best_accuracy - self.config.drop:
            return GuardDecision(accuracy, "ok")
        distributed.barrier()  # rank 0 wrote the best state; every rank restores it
        checkpoints = self.best_path.parent
        best = safe_load(self.best_path, map_location=next(model.parameters()).device,
                         remedy=f"the guard cannot restore its best epoch without it: delete {checkpoints} and rerun "
                                "with --resume to train the run again from its first epoch")
        model.load_state_dict(best["state_dict"])
        if self.config.action == "rollback" and state.rollbacks < self.config.max_rollbacks:
            optimizer.load_state_dict(best["optimizer"])
            loss_fn.load_state_dict(best["loss_state"])
            state.rollbacks += 1
            state.lr_scale *= self.config.lr_factor
            return GuardDecision(accuracy, "rollback")
        state.stopped = True
        return GuardDecision(accuracy, "stop")

    def message(self, decision: GuardDecision) -> str:
        best = f"best {100 * self.state.best_accuracy:.1f}% at epoch {self.state.best_epoch}"
        head = (f"catastrophic overfitting: held-out PGD-{self.config.steps} accuracy "
                f"{100 * decision.accuracy:.1f}% fell more than {100 * self.config.drop:.0f} points below the {best}")
        if decision.event == "rollback":
            return (f"{head}; rolled back to epoch {self.state.best_epoch}'s weights, learning rate now "
                    f"x{self.state.lr_scale:g} (rollback {self.state.rollbacks}/{self.config.max_rollbacks})")
        return f"{head}; stopped training with epoch {self.state.best_epoch}'s weights"

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = GuardState(**state)
