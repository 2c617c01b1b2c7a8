"""Run a recipe end to end: build, train phase by phase, checkpoint every epoch, resume.

A run directory holds::

    config.yaml               the resolved TrainConfig
    checkpoints/last.pt       full training state after the latest finished epoch
    checkpoints/previous.pt   the state before it, while the run trains (``run_checkpoints.py``)
    model.pt                  the final model (weights + spec to rebuild it, head included)
    metrics.csv               one row per epoch

Every file is written atomically (``robustloss.checkpoint``); a start or resume first deletes the
temporary files that a killed write left behind.

``resume=True`` restores weights, optimizer, both RNG states and the metrics history from
``last.pt`` (``previous.pt`` if ``last.pt`` is damaged) and continues with the next epoch, so a
killed run ends with exactly the weights an uninterrupted run would have (adversarial training
included: it draws all its randomness from the checkpointed generator). Divergence - a NaN/inf
loss or logits during the epoch, non-finite weights or test logits after it (``divergence.py``) -
raises ``NonFiniteLossError`` before anything is written, so ``last.pt`` stays the last good state.

``on_epoch(row, checkpoint_path)`` is called after each epoch's checkpoint is written (the
experiment runner records metrics and the checkpoint's hash from it); ``tensorboard=DIR``
also writes each epoch's scalars there when the optional ``tensorboard`` package is installed.

The speed settings (``data_on_device``, ``precision``, ``channels_last``, ``compile``) are
applied by ``robustloss.train.speed``; none of them draws random numbers, so resume stays exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from robustloss import distributed
from robustloss.config import from_dict, to_dict
from robustloss.data import Dataset, load_dataset
from robustloss.data.split import ImageSplit
from robustloss.data.stratified import stratified_indices
from robustloss.device import resolve_device
from robustloss.errors import CheckpointError, ConfigError, NonFiniteLossError, NonFiniteOutputError
from robustloss.losses import Loss, create_loss
from robustloss.models.classifier import Classifier
from robustloss.models.saved import HeadSpec, ModelSpec, save_model
from robustloss.progress import show_progress
from robustloss.train.adversarial import AdversarialTraining
from robustloss.train.overfitting_guard import OverfittingGuard, split_held_out
from robustloss.train.trades import TradesTraining
from robustloss.train.augment import augmentation_for
from robustloss.train.config import OptimizerConfig, TrainConfig
from robustloss.train.divergence import check_finite_state
from robustloss.models.predict import predict
from robustloss.train.loop import AdversarialHook, train_one_epoch
from robustloss.train.run_folder import MODEL_FILE, claim_run_dir, comparable_config, write_metrics
from robustloss.train.run_checkpoints import (LAST_CHECKPOINT, drop_previous_state, load_resume_state, remove_leftovers,
                                              save_epoch_state)
from robustloss.train.speed import (check_supported, explain_compile_errors, place_training_data, prepare_model,
                                    release_model)
from robustloss.train.tensorboard import open_scalar_writer

_log = logging.getLogger(__name__)



@dataclass
class TrainResult:
    model: Classifier
    spec: ModelSpec
    history: list[dict]
    run_dir: Path


def model_spec_for(config: TrainConfig, dataset: Dataset) -> ModelSpec:
    channels, height, _ = dataset.image_shape
    params = {"num_classes": dataset.num_classes, "in_channels": channels, "input_size": height}
    return ModelSpec(name=config.model, params=params | config.model_params)


def build_optimizer(parameters: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    parameters = list(parameters)
    if cfg.name == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _trained_parameters(model: Classifier, loss_fn: Loss) -> list[torch.nn.Parameter]:
    """The model's parameters, then the loss's own (e.g. center-loss centers), in a fixed order."""
    return [*model.parameters(), *loss_fn.parameters()]


def learning_rate_at(cfg: OptimizerConfig, epoch: int) -> float:
    """MultiStep decay: lr * gamma^(number of milestones already passed)."""
    return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)


def _training_subset(config: TrainConfig, data: Dataset, log: Callable[[str], None]) -> Dataset:
    if config.max_train_samples is None or config.max_train_samples >= len(data.train):
        return data
    index = stratified_indices(data.train.labels, config.max_train_samples)
    log(f"training on a class-stratified subset of {len(index)} of {len(data.train)} samples (max_train_samples)")
    return dataclasses.replace(data, train=data.train.subset(index))


def _adversarial_hook(config: TrainConfig, phase_index: int, loss_fn: Loss, model: Classifier) -> AdversarialHook | None:
    """The AT hook for this phase, or None. Rebuilt every epoch: it must follow the current
    model (rebuilt on resume, head replaced by a new phase) and loss."""
    at = config.adversarial
    if at is None or not at.applies_to(phase_index):
        return None
    if at.method == "trades":
        return TradesTraining(at, loss_fn, model, config.precision)
    return AdversarialTraining(at, loss_fn, model, config.precision)


def _overfitting_guard(config: TrainConfig, data: Dataset, run_dir: Path, log: Callable[[str], None]
                       ) -> tuple[Dataset, OverfittingGuard | None]:
    """(training data, guard): with a guard, its held-out samples leave the training set."""
    at = config.adversarial
    if at is None or at.guard is None:
        return data, None
    try:
        data, held_out = split_held_out(data, at.guard.held_out)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    log(f"catastrophic-overfitting guard: {len(held_out)} training samples held out for PGD checks")
    return data, OverfittingGuard(at.guard, at, held_out, run_dir, seed=config.seed)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    data: Dataset | None = None,
    data_dir: str | Path | None = None,
    resume: bool = False,
    device: str | None = "auto",
    progress: bool | None = None,
    log: Callable[[str], None] = _log.info,
    on_epoch: Callable[[dict, Path], None] | None = None,
    tensorboard: str | Path | None = None,
) -> TrainResult:
    """Train ``config`` into ``run_dir`` (checkpoint every epoch, ``model.pt`` at the end) and return the model.

    Three steps: set up (data, seed, model, optimizer), the epoch loop (from the last checkpoint when
    ``resume``), and the finish (final model saved uncompiled, in eval mode)."""
    run, at = _set_up(config, Path(run_dir), data, data_dir, resume, device, progress, log)
    if resume:
        _resume(run, at, on_epoch)
    _epoch_loop(run, at, on_epoch, tensorboard)
    return _finish(run, at)


def _set_up(config: TrainConfig, run_dir: Path, data: Dataset | None, data_dir: str | Path | None, resume: bool,
            device: str | None, progress: bool | None, log: Callable[[str], None]) -> tuple[_Run, _State]:
    """Claim the run folder, load and place the data, seed, and build the model and optimizer."""
    dev = resolve_device(device)
    check_supported(config, dev)
    distributed.from_main(lambda: claim_run_dir(run_dir, config, resume))  # an error reaches every rank
    if distributed.is_main():  # under torchrun, only rank 0 writes files; every rank trains
        remove_leftovers(run_dir, log)
    data = data if data is not None else load_dataset(config.dataset, data_dir)
    data = _training_subset(config, data, log)
    data, guard = _overfitting_guard(config, data, run_dir, log)
    train_split = place_training_data(data.train, config.data_on_device, dev, log)

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    spec = model_spec_for(config, data)
    at = _State(spec=spec, model=prepare_model(spec.build().to(dev), config, dev))
    at.optimizer = build_optimizer(at.model.parameters(), config.optimizer)
    run = _Run(config, run_dir, data, train_split, generator, augmentation_for(config.augment, data.spec.color),
               dev, progress, guard, log)
    return run, at


def _resume(run: _Run, at: _State, on_epoch: Callable[[dict, Path], None] | None) -> None:
    """Restore the last checkpoint, if there is one, into ``at`` and the run's generator and guard."""
    main = distributed.is_main()
    loaded = load_resume_state(run.run_dir, run.device, run.log, writer=main)
    if loaded is None:
        return
    state, loaded_path = loaded
    _restore(at, state, loaded_path, run.config, run.device, run.generator, run.guard)
    run.log(f"resuming {run.run_dir} after epoch {at.start_epoch}/{run.config.total_epochs}")
    if main and at.history:
        # A kill can land after a checkpoint is written but before metrics.csv and on_epoch
        # catch up with it; the run resumes after that epoch, so replay it once (both are idempotent).
        write_metrics(run.run_dir / "metrics.csv", at.history)
        if on_epoch is not None:
            on_epoch(dict(at.history[-1]), loaded_path)


def _epoch_loop(run: _Run, at: _State, on_epoch: Callable[[dict, Path], None] | None,
                tensorboard: str | Path | None) -> None:
    """Train the remaining epochs; after each, checkpoint, append metrics and report it (rank 0 only)."""
    config, guard, main = run.config, run.guard, distributed.is_main()
    # compile errors surface at the first forward or backward pass, anywhere in the epoch loop
    with open_scalar_writer(tensorboard, run.log) as scalars, explain_compile_errors(config.compile):
        for epoch in range(at.start_epoch, config.total_epochs):
            if guard is not None and guard.state.stopped:
                break
            row = _train_epoch(run, at, epoch)
            at.history.append(row)
            if not main:
                continue
            checkpoint_path = save_epoch_state(_checkpoint(at, epoch, config, run.generator, guard), run.run_dir)
            write_metrics(run.run_dir / "metrics.csv", at.history)
            scalars.write(row)
            if on_epoch is not None:  # only now: the row and the checkpoint it describes are on disk
                on_epoch(dict(row), checkpoint_path)


def _finish(run: _Run, at: _State) -> TrainResult:
    """Save the final model (rank 0), drop the resume state, and hand the model back in eval mode."""
    at.optimizer.zero_grad(set_to_none=True)  # the returned model carries no stale gradients
    release_model(at.model)  # saved and returned uncompiled: it runs eagerly, like any loaded model
    at.model.eval()
    if distributed.is_main():
        save_model(run.run_dir / MODEL_FILE, at.model, at.spec, config=to_dict(run.config), history=at.history)
        drop_previous_state(run.run_dir)
    distributed.barrier()  # model.pt is on disk before any rank goes on (e.g. to evaluate it)
    return TrainResult(model=at.model, spec=at.spec, history=at.history, run_dir=run.run_dir)


@dataclass
class _State:
    """What the epoch loop carries from epoch to epoch (and restores on resume)."""

    spec: ModelSpec
    model: Classifier
    optimizer: torch.optim.Optimizer | None = None
    loss_fn: Loss | None = None
    phase: int = -1
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0


@dataclass
class _Run:
    """What stays fixed for the whole run: settings, data, randomness and where things go."""

    config: TrainConfig
    run_dir: Path
    data: Dataset
    train_split: ImageSplit
    generator: torch.Generator
    augment: Callable | None
    device: torch.device
    progress: bool | None
    guard: OverfittingGuard | None
    log: Callable[[str], None]


def _train_epoch(run: _Run, at: _State, epoch: int) -> dict:
    """Train epoch ``epoch`` (0-based), check it did not diverge, and return its metrics row."""
    config, guard = run.config, run.guard
    phase_index, phase = config.phase_at(epoch)
    if phase_index != at.phase:
        _enter_phase(at, phase_index, config, run.device)
    assert at.optimizer is not None and at.loss_fn is not None
    lr = learning_rate_at(config.optimizer, epoch) * (guard.state.lr_scale if guard is not None else 1.0)
    for group in at.optimizer.param_groups:
        group["lr"] = lr
    started = time.perf_counter()
    desc = f"{run.run_dir.name} epoch {epoch + 1}/{config.total_epochs} [{phase.loss}]"
    with _stops_on_divergence(run.run_dir, config, at.optimizer):
        stats = train_one_epoch(
            at.model, at.loss_fn, run.train_split, at.optimizer, batch_size=config.batch_size,
            generator=run.generator, augment=run.augment, device=run.device, desc=desc, progress=run.progress,
            adversarial=_adversarial_hook(config, phase_index, at.loss_fn, at.model),
            precision=config.precision, channels_last=config.channels_last,
        )
        if config.adversarial is not None:  # same metrics.csv columns in clean and AT phases
            stats.setdefault("adv_fraction", 0.0)
        check_finite_state(desc, model=at.model, loss=at.loss_fn, optimizer=at.optimizer)
        test_acc = _test_accuracy(at.model, run.data, run.device, desc)
    row = {"epoch": epoch + 1, "phase": phase.loss, "lr": lr, **stats, "test_acc": test_acc}
    if guard is not None:  # before the checkpoint: a rollback's restored state is what gets saved
        row |= _guard_check(guard, epoch, phase_index, config, at.model, at.optimizer, at.loss_fn, run.log)
    row["seconds"] = time.perf_counter() - started
    adv = f"  adversarial {100 * row['adv_fraction']:.0f}%" if row.get("adv_fraction") else ""
    held = f"  held-out PGD {100 * row['guard_pgd_acc']:.1f}%" if row.get("guard_pgd_acc", -1) >= 0 else ""
    if _logs_epoch(epoch, config, run.progress) or adv or held:
        run.log(f"{desc}: loss {row['train_loss']:.4f}  train acc {100 * row['train_acc']:.1f}%  "
                f"test acc {100 * test_acc:.1f}%{adv}{held}  ({row['seconds']:.1f}s)")
    return row


# Off a terminal a long run logs every EPOCH_LOG_EVERY-th epoch (and each phase's first and last), so a
# 100-epoch model leaves about 25 lines in a CI or cluster log instead of 100; metrics.csv has them all.
EPOCH_LOG_EVERY = 5
SHORT_RUN_EPOCHS = 20  # runs this short log every epoch anyway


def _logs_epoch(epoch: int, config: TrainConfig, progress: bool | None) -> bool:
    """Whether epoch ``epoch`` (0-based) gets a log line: always on a terminal and in short runs."""
    if show_progress(progress) or config.total_epochs <= SHORT_RUN_EPOCHS:
        return True
    start = 0
    for phase in config.recipe:
        if epoch in (start, start + phase.epochs - 1):
            return True
        start += phase.epochs
    return (epoch + 1) % EPOCH_LOG_EVERY == 0


def _restore(at: _State, state: dict, path: Path, config: TrainConfig, dev: torch.device,
             generator: torch.Generator, guard: OverfittingGuard | None) -> None:
    """Put the loop back where the checkpoint ``state`` (read from ``path``) left it."""
    saved = comparable_config(state.get("config"))
    if saved != to_dict(config):  # config.yaml was checked already; this catches a checkpoint from elsewhere
        raise CheckpointError(f"cannot resume from {path}: it was written by a run with a different config; "
                              "delete it to restart this run from its first epoch, or train into a new --out")
    at.spec = from_dict(ModelSpec, state["model_spec"])
    at.model = prepare_model(at.spec.build().to(dev), config, dev)
    at.model.load_state_dict(state["state_dict"])
    at.phase = state["phase"]["index"]
    phase = config.recipe[at.phase]
    at.loss_fn = create_loss(phase.loss, **phase.params).to(dev)
    at.loss_fn.bind(at.model)
    at.loss_fn.load_state_dict(state["loss_state"])
    at.optimizer = build_optimizer(_trained_parameters(at.model, at.loss_fn), config.optimizer)
    at.optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"]["generator"])
    torch.set_rng_state(state["rng"]["torch"])
    at.history, at.start_epoch = state["history"], state["epoch"]
    if guard is not None:
        guard.load_state_dict(state["guard"])


def _enter_phase(at: _State, phase_index: int, config: TrainConfig, dev: torch.device) -> None:
    """Switch to a recipe phase: its loss, the head that loss shapes, and an optimizer that covers them."""
    phase = config.recipe[phase_index]
    at.phase = phase_index
    at.loss_fn = create_loss(phase.loss, **phase.params).to(dev)
    head = at.loss_fn.make_head(at.model.feature_dim, at.model.num_classes)
    if head is not None:  # the loss shapes the classifier: the saved model carries this head
        at.model.replace_head(head.to(dev))
        at.spec = dataclasses.replace(at.spec, head=HeadSpec(phase.loss, dict(phase.params)))
    at.spec = dataclasses.replace(at.spec, loss=phase.loss)
    at.model.trained_with = phase.loss
    at.loss_fn.bind(at.model)
    trained = _trained_parameters(at.model, at.loss_fn)
    assert at.optimizer is not None
    if [id(p) for p in trained] != [id(p) for g in at.optimizer.param_groups for p in g["params"]]:
        at.optimizer = build_optimizer(trained, config.optimizer)  # new head or loss parameters


def _checkpoint(at: _State, epoch: int, config: TrainConfig, generator: torch.Generator,
                guard: OverfittingGuard | None) -> dict:
    """The full training state after ``epoch`` (0-based): everything a resume needs to continue exactly."""
    assert at.optimizer is not None and at.loss_fn is not None
    phase_index, phase = config.phase_at(epoch)
    return {"model_spec": to_dict(at.spec), "state_dict": at.model.state_dict(), "optimizer": at.optimizer.state_dict(),
            "loss_state": at.loss_fn.state_dict(),
            "epoch": epoch + 1, "phase": {"index": phase_index, "loss": phase.loss}, "history": at.history,
            "config": to_dict(config),
            "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()},
            "guard": guard.state_dict() if guard is not None else None}


def _test_accuracy(model: Classifier, data: Dataset, dev: torch.device, desc: str) -> float:
    """Clean test accuracy; NaN/inf logits mean the last update diverged (see ``divergence.py``)."""
    try:
        predictions = predict(model, data.test, device=dev, require_finite=True)
    except NonFiniteOutputError as err:
        raise NonFiniteLossError(f"{desc}: after the epoch's last update {err}, although the loss stayed "
                                 "finite") from None
    return float((predictions == data.test.labels).float().mean())


@contextlib.contextmanager
def _stops_on_divergence(run_dir: Path, config: TrainConfig, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Turn a divergence inside the block into the error the user sees: what happened, that nothing
    was saved after the last good epoch, and the learning rate that was in effect when it happened."""
    try:
        yield
    except NonFiniteLossError as err:
        kept = run_dir / LAST_CHECKPOINT
        kept_text = kept if kept.exists() else "none (failed in the first epoch)"
        in_effect = optimizer.param_groups[0]["lr"]
        base = "" if in_effect == config.optimizer.lr else f"; optimizer.lr is {config.optimizer.lr:g}"
        raise NonFiniteLossError(
            f"{err}. Training stopped; the last good checkpoint is kept: {kept_text}. "
            f"Try a lower learning rate (the rate in effect was {in_effect:g}{base})."
        ) from None


def _guard_check(guard: OverfittingGuard, epoch: int, phase_index: int, config: TrainConfig, model: Classifier,
                 optimizer: torch.optim.Optimizer, loss_fn: Loss, log: Callable[[str], None]) -> dict:
    """The guard's metrics columns for this epoch (the same columns in every row, -1/"" when idle)."""
    assert config.adversarial is not None
    if not config.adversarial.applies_to(phase_index):  # clean phases are not expected to be robust
        return {"guard_pgd_acc": -1.0, "guard_event": ""}
    decision = guard.after_epoch(epoch + 1, phase_index, model, optimizer, loss_fn)
    if decision.event in ("rollback", "stop"):
        log(guard.message(decision))
    return {"guard_pgd_acc": decision.accuracy, "guard_event": decision.event}
