"""Run a recipe end to end: build, train phase by phase, checkpoint every epoch, resume.

A run directory holds::

    config.yaml            the resolved TrainConfig
    checkpoints/last.pt    full training state after the latest finished epoch (atomic)
    model.pt               the final model (weights + spec to rebuild it, head included)
    metrics.csv            one row per epoch

``resume=True`` restores weights, optimizer, both RNG states and the metrics history from
``last.pt`` and continues with the next epoch, so a killed run ends with exactly the
weights an uninterrupted run would have (adversarial training included: it draws all its
randomness from the checkpointed generator). A NaN/inf loss raises ``NonFiniteLossError``
before anything is written, so ``last.pt`` stays the last good state.

``on_epoch(row, checkpoint_path)`` is called after each epoch's checkpoint is written (the
experiment runner records metrics and the checkpoint's hash from it); ``tensorboard=DIR``
also writes each epoch's scalars there when the optional ``tensorboard`` package is installed.

The speed settings (``data_on_device``, ``precision``, ``channels_last``, ``compile``) are
applied by ``robustloss.train.speed``; none of them draws random numbers, so resume stays exact.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import yaml

from robustloss import distributed
from robustloss.checkpoint import atomic_save, safe_load
from robustloss.config import from_dict, to_dict
from robustloss.data import Dataset, load_dataset
from robustloss.data.stratified import stratified_indices
from robustloss.device import resolve_device
from robustloss.errors import CheckpointError, ConfigError, NonFiniteLossError
from robustloss.losses import Loss, create_loss
from robustloss.models.classifier import Classifier
from robustloss.models.saved import HeadSpec, ModelSpec, save_model
from robustloss.train.adversarial import AdversarialTraining
from robustloss.train.overfitting_guard import OverfittingGuard, split_held_out
from robustloss.train.trades import TradesTraining
from robustloss.train.augment import augmentation_for
from robustloss.train.config import OptimizerConfig, TrainConfig
from robustloss.train.loop import AdversarialHook, predict, train_one_epoch
from robustloss.train.speed import (check_supported, explain_compile_errors, place_training_data, prepare_model,
                                    release_model)
from robustloss.train.tensorboard import open_scalar_writer

LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
MODEL_FILE = "model.pt"


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
        return TradesTraining(at, loss_fn, model)
    return AdversarialTraining(at, loss_fn, model)


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
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict, Path], None] | None = None,
    tensorboard: str | Path | None = None,
) -> TrainResult:
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    check_supported(config, dev)
    checkpoint_path = run_dir / LAST_CHECKPOINT
    main = distributed.is_main()  # under torchrun, only rank 0 writes files; every rank trains
    distributed.from_main(lambda: _claim_run_dir(run_dir, config, resume))  # an error reaches every rank
    data = data if data is not None else load_dataset(config.dataset, data_dir)
    data = _training_subset(config, data, log)
    data, guard = _overfitting_guard(config, data, run_dir, log)
    train_split = place_training_data(data.train, config.data_on_device, dev, log)

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    spec = model_spec_for(config, data)
    model = prepare_model(spec.build().to(dev), config, dev)
    loss_fn: Loss | None = None
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    history: list[dict] = []
    start_epoch, current_phase = 0, -1
    if resume and checkpoint_path.exists():
        state = safe_load(checkpoint_path, map_location=dev)
        spec = from_dict(ModelSpec, state["model_spec"])
        model = prepare_model(spec.build().to(dev), config, dev)
        model.load_state_dict(state["state_dict"])
        current_phase = state["phase"]["index"]
        phase = config.recipe[current_phase]
        loss_fn = create_loss(phase.loss, **phase.params).to(dev)
        loss_fn.bind(model)
        loss_fn.load_state_dict(state["loss_state"])
        optimizer = build_optimizer(_trained_parameters(model, loss_fn), config.optimizer)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        history, start_epoch = state["history"], state["epoch"]
        if guard is not None:
            guard.load_state_dict(state["guard"])
        log(f"resuming {run_dir} after epoch {start_epoch}/{config.total_epochs}")
        if main and history:
            # A kill can land after a checkpoint is written but before metrics.csv and on_epoch
            # catch up with it; the run resumes after that epoch, so replay it once (both are idempotent).
            _write_metrics(run_dir / "metrics.csv", history)
            if on_epoch is not None:
                on_epoch(dict(history[-1]), checkpoint_path)

    augment = augmentation_for(config.augment, data.spec.color)
    # compile errors surface at the first forward or backward pass, anywhere in the epoch loop
    with open_scalar_writer(tensorboard, log) as scalars, explain_compile_errors(config.compile):
        for epoch in range(start_epoch, config.total_epochs):
            if guard is not None and guard.state.stopped:
                break
            phase_index, phase = config.phase_at(epoch)
            if phase_index != current_phase:
                current_phase = phase_index
                loss_fn = create_loss(phase.loss, **phase.params).to(dev)
                head = loss_fn.make_head(model.feature_dim, model.num_classes)
                if head is not None:  # the loss shapes the classifier: the saved model carries this head
                    model.replace_head(head.to(dev))
                    spec = dataclasses.replace(spec, head=HeadSpec(phase.loss, dict(phase.params)))
                spec = dataclasses.replace(spec, loss=phase.loss)
                model.trained_with = phase.loss
                loss_fn.bind(model)
                trained = _trained_parameters(model, loss_fn)
                if [id(p) for p in trained] != [id(p) for g in optimizer.param_groups for p in g["params"]]:
                    optimizer = build_optimizer(trained, config.optimizer)  # new head or loss parameters
            lr = learning_rate_at(config.optimizer, epoch) * (guard.state.lr_scale if guard is not None else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr

            started = time.perf_counter()
            desc = f"{run_dir.name} epoch {epoch + 1}/{config.total_epochs} [{phase.loss}]"
            try:
                assert loss_fn is not None
                stats = train_one_epoch(
                    model, loss_fn, train_split, optimizer, batch_size=config.batch_size, generator=generator,
                    augment=augment, device=dev, desc=desc, progress=progress,
                    adversarial=_adversarial_hook(config, phase_index, loss_fn, model),
                    precision=config.precision, channels_last=config.channels_last,
                )
                if config.adversarial is not None:  # same metrics.csv columns in clean and AT phases
                    stats.setdefault("adv_fraction", 0.0)
            except NonFiniteLossError as err:
                kept = checkpoint_path if checkpoint_path.exists() else "none (failed in the first epoch)"
                raise NonFiniteLossError(
                    f"{err}. Training stopped; the last good checkpoint is kept: {kept}. "
                    f"Try a lower learning rate (optimizer.lr={config.optimizer.lr})."
                ) from None
            test_acc = float((predict(model, data.test, device=dev) == data.test.labels).float().mean())
            row = {"epoch": epoch + 1, "phase": phase.loss, "lr": lr, **stats, "test_acc": test_acc}
            if guard is not None:  # before the checkpoint: a rollback's restored state is what gets saved
                row |= _guard_check(guard, epoch, phase_index, config, model, optimizer, loss_fn, log)
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            adv = f"  adversarial {100 * row['adv_fraction']:.0f}%" if row.get("adv_fraction") else ""
            held = f"  held-out PGD {100 * row['guard_pgd_acc']:.1f}%" if row.get("guard_pgd_acc", -1) >= 0 else ""
            log(f"{desc}: loss {row['train_loss']:.4f}  train acc {100 * row['train_acc']:.1f}%  "
                f"test acc {100 * test_acc:.1f}%{adv}{held}  ({row['seconds']:.1f}s)")
            if not main:
                continue
            atomic_save(
                {"model_spec": to_dict(spec), "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "loss_state": loss_fn.state_dict(),
                 "epoch": epoch + 1, "phase": {"index": phase_index, "loss": phase.loss}, "history": history,
                 "config": to_dict(config),
                 "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()},
                 "guard": guard.state_dict() if guard is not None else None},
                checkpoint_path,
            )
            _write_metrics(run_dir / "metrics.csv", history)
            scalars.write(row)
            if on_epoch is not None:  # only now: the row and the checkpoint it describes are on disk
                on_epoch(dict(row), checkpoint_path)

    optimizer.zero_grad(set_to_none=True)  # the returned model carries no stale gradients
    release_model(model)  # saved and returned uncompiled: it runs eagerly, like any loaded model
    model.eval()
    if main:
        save_model(run_dir / MODEL_FILE, model, spec, config=to_dict(config), history=history)
    distributed.barrier()  # model.pt is on disk before any rank goes on (e.g. to evaluate it)
    return TrainResult(model=model, spec=spec, history=history, run_dir=run_dir)


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


def is_complete(run_dir: str | Path, config: TrainConfig) -> bool:
    """True when ``run_dir`` already holds a finished model trained with exactly ``config``."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL_FILE).exists() or not (run_dir / "config.yaml").exists():
        return False
    return _comparable(yaml.safe_load((run_dir / "config.yaml").read_text())) == to_dict(config)


def _comparable(raw: object) -> object:
    """A stored config.yaml as ``to_dict`` would write it today: fields added since the run was
    written (e.g. ``adversarial``) take their defaults, so an older run still matches its config."""
    try:
        return to_dict(from_dict(TrainConfig, raw))
    except ConfigError:
        return raw  # not loadable as a TrainConfig: compared as is, and so reported as different


def _claim_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    """Write config.yaml, refusing to overwrite a different or unfinished run by accident."""
    config_path = run_dir / "config.yaml"
    wanted = to_dict(config)
    if config_path.exists():
        existing = _comparable(yaml.safe_load(config_path.read_text()))
        if not resume:
            raise CheckpointError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        if existing != wanted:
            changed = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
            raise CheckpointError(
                f"cannot resume {run_dir}: its config differs in {', '.join(changed)}; use a new --out for a new config"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(wanted, sort_keys=False))


def _write_metrics(path: Path, history: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        # Union of the rows' keys in first-seen order: a resumed run may add a column
        # (e.g. adv_fraction) that rows written by an older version lack.
        fieldnames = list(dict.fromkeys(key for row in history for key in row))
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def load_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
    return from_dict(TrainConfig, yaml.safe_load(path.read_text()), path="")
