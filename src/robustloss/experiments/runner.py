"""``run_experiment``: train (or reuse) and evaluate every cell of an experiment, resumably.

Layout under ``root`` (default ``runs/``)::

    results.sqlite           the results store (runs, cells, metrics, evaluations, per-sample outcomes)
    models/<train hash>/     one trained model per distinct training config (shared by every cell,
                             experiment and substitute that trains the same thing)
    runs/<run hash>/         a cell's evaluation: finished chunks (resume) and records.npz

Killing the process at any moment loses nothing: training resumes from its last epoch
checkpoint, evaluation from its last finished chunk, and the store is written in
transactions keyed by hashes, so a re-run neither redoes finished work nor duplicates rows.
A file lock per model and per run keeps two processes from working on the same one at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import logging
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from robustloss import distributed
from robustloss.data import load_dataset
from robustloss.data.spec import Dataset
from robustloss.errors import RobustlossError
from robustloss.evaluate.config import AttackSpec
from robustloss.evaluate.run import diagnostics_of, run_evaluation
from robustloss.experiments.analyses import run_experiment_analyses
from robustloss.experiments.schema import Experiment, RunCell, config_hash, substitute_reference
from robustloss.experiments.store import ResultsStore, StoreError
from robustloss.models.saved import load_model
from robustloss.train import TrainConfig, is_complete, train
from robustloss.train.run_folder import MODEL_FILE

_log = logging.getLogger(__name__)

STORE_FILE = "results.sqlite"


@dataclass
class CellOutcome:
    cell: RunCell
    run_id: int
    status: str  # done | reused | failed
    error: str = ""
    seconds: float = 0.0


class Busy(Exception):
    """Another process holds the lock on this model or run."""


# PyTorch's zip writer reports a failed write without the OS error behind it; a full disk is the usual cause.
_TORCH_WRITE_FAILED = "PytorchStreamWriter failed writing file"


def disk_full(err: BaseException | None) -> bool:
    """Whether ``err``, or an error it was raised from or during, means the disk (or quota) is full."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err)
        if _TORCH_WRITE_FAILED in text or "no space left on device" in text.lower() or "disk is full" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def describe_failure(err: BaseException) -> str:
    """The error recorded for a failed cell: the exception as it is, except a full disk, whose raw
    message (often PyTorch's "PytorchStreamWriter failed writing file data/0") does not say so."""
    if not disk_full(err):
        return f"{type(err).__name__}: {err}"
    cause: BaseException | None = err
    path = None
    while cause is not None and path is None:  # the first OSError in the chain that names its file
        path = getattr(cause, "filename", None) if isinstance(cause, OSError) else None
        cause = cause.__cause__ or cause.__context__
    return (f"no space left on device{f' writing {path}' if path else ''}: the file being written was not "
            "completed; free some space and run the same command again (finished epochs and evaluation chunks "
            "are kept)")


def code_revision() -> str:
    """The git commit of the robustloss source (with -dirty for local changes), else the version."""
    from importlib.metadata import PackageNotFoundError, version

    source = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        try:
            return f"robustloss {version('robustloss')}"
        except PackageNotFoundError:
            return "unknown"


@contextlib.contextmanager
def locked(folder: Path, wait: bool) -> Iterator[None]:
    """An exclusive lock on ``folder``; ``wait=False`` raises ``Busy`` instead of blocking.
    Under torchrun the job is one user of the folder: rank 0 holds the lock for all its ranks."""
    if distributed.current() is not None:
        with contextlib.ExitStack() as stack:
            distributed.from_main(lambda: stack.enter_context(_file_lock(folder, wait)))
            yield
        return
    with _file_lock(folder, wait):
        yield


@contextlib.contextmanager
def _file_lock(folder: Path, wait: bool) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(str(folder)) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ExperimentRunner:
    def __init__(self, root: str | Path = "runs", *, store: ResultsStore | None = None, device: str = "auto",
                 data_dir: str | Path | None = None, progress: bool | None = None, tensorboard: bool = False,
                 log: Callable[[str], None] = _log.info):
        self.root = Path(root)
        self.local_store = store or ResultsStore(self.root / STORE_FILE)
        # Under torchrun every rank runs the grid, but only rank 0 touches the store; the others
        # receive its answers, so that all of them take the same decisions.
        self.store = MainRankStore(self.local_store) if distributed.current() is not None else self.local_store
        self.device, self.data_dir, self.progress, self.log = device, data_dir, progress, log
        self.tensorboard = tensorboard
        self.revision = code_revision()
        self._data: dict[str, Dataset] = {}
        self.analysis_failures: list[str] = []  # of the latest run(); the CLI exits non-zero on any

    # -- the grid --------------------------------------------------------------------------------
    def run(self, experiment: Experiment) -> list[CellOutcome]:
        self.store.save_experiment(experiment.name, experiment.scale, experiment.document())
        outcomes: list[CellOutcome] = []
        deferred = []
        total = len(experiment.cells)
        for i, cell in enumerate(experiment.cells, start=1):
            self.log(f"[{i}/{total}] {experiment.name} · {cell.name}")
            try:
                outcomes.append(self.run_cell(experiment, cell, wait=False))
            except Busy:
                self.log("  another process is working on this cell; coming back to it at the end")
                deferred.append(cell)
        for cell in deferred:  # now wait for the other process, then reuse or finish its work
            outcomes.append(self.run_cell(experiment, cell, wait=True))
        if experiment.file.analyses:
            trained = {o.cell.train_hash for o in outcomes if o.status != "failed"}
            if all(c.train_hash in trained for c in experiment.cells):
                # Analyses are not sharded: rank 0 computes them (with the store to itself).
                self.analysis_failures = distributed.from_main(lambda: run_experiment_analyses(self, experiment))
            else:
                self.log("analyses skipped: some cells failed (their models are missing)")
        return outcomes

    def run_cell(self, experiment: Experiment, cell: RunCell, *, wait: bool) -> CellOutcome:
        started = time.perf_counter()
        run_dir = self.root / "runs" / cell.hash
        run_id = self.store.upsert_run(
            hash=cell.hash, experiment=experiment.name, name=cell.name, config=cell.to_dict(), kind="model",
            train_hash=cell.train_hash, model_dir=str(self.model_dir(cell.train)), run_dir=str(run_dir),
            code_revision=self.revision)
        self.store.link_cell(experiment=experiment.name, scale=experiment.scale, cell=cell.labels, run_id=run_id)
        if self.store.get_run(run_id).status == "done":
            self.log(f"  done before (run {cell.hash}); reusing its results")
            return CellOutcome(cell, run_id, "reused")
        with locked(run_dir, wait):
            if self.store.get_run(run_id).status == "done":  # finished by another process meanwhile
                return CellOutcome(cell, run_id, "reused")
            try:
                self.store.set_status(run_id, "training")
                model = self.trained_model(cell.train, run_id, wait=wait)
                substitutes = {name: self.model_dir(config) for name, config in cell.substitutes.items()}
                for name, config in cell.substitutes.items():
                    self.trained_model(config, None, wait=wait, role=f"substitute {name}")
                self.store.set_status(run_id, "evaluating")
                self.evaluate_cell(cell, model, run_id, run_dir, substitutes)
                self.store.set_status(run_id, "done")
            except Busy:
                self.store.set_status(run_id, "pending")
                raise
            except Exception as err:  # recorded, then the grid goes on; the CLI exits non-zero
                message = describe_failure(err)
                if disk_full(err):
                    self._stop_for_full_disk(run_id, message)
                self.store.set_status(run_id, "failed", message)
                self.log(f"  FAILED: {message}")
                self.log("".join(traceback.format_exception(err)[-3:]).rstrip())
                return CellOutcome(cell, run_id, "failed", message, time.perf_counter() - started)
        return CellOutcome(cell, run_id, "done", seconds=time.perf_counter() - started)

    def _stop_for_full_disk(self, run_id: int, message: str) -> None:
        """Record the cell as failed if the store still can be written, then stop the grid: every later
        cell would fail the same way, and a rerun after freeing space continues where this one stopped."""
        with contextlib.suppress(StoreError):  # the store may sit on the same full disk
            self.store.set_status(run_id, "failed", message)
        self.log(f"  FAILED: {message}")
        raise RobustlossError(f"{message}; the remaining cells were not started") from None

    # -- training --------------------------------------------------------------------------------
    def model_dir(self, config: TrainConfig) -> Path:
        return self.root / "models" / config_hash(config)

    def dataset(self, name: str) -> Dataset:
        if name not in self._data:
            self._data[name] = load_dataset(name, self.data_dir)
        return self._data[name]

    def trained_model(self, config: TrainConfig, run_id: int | None, *, wait: bool, role: str = "model"):
        """Train ``config`` into its model folder, or load it when it is already finished there."""
        folder = self.model_dir(config)
        if run_id is None:  # a substitute: tracked in the store as its own run
            run_id = self.store.upsert_run(hash=config_hash(config), experiment="", name=role,
                                           config=dataclasses.asdict(config), kind="substitute",
                                           train_hash=config_hash(config), model_dir=str(folder),
                                           code_revision=self.revision)
        with locked(folder, wait):
            if distributed.from_main(lambda: is_complete(folder, config)):
                self.log(f"  {role}: reusing the trained model in {folder}")
                model, _, payload = load_model(folder / MODEL_FILE,
                                                sha256=self.store.recorded_sha256(folder / MODEL_FILE))
                self.store.add_metrics(run_id, payload.get("history", []))
            else:
                recipe = " -> ".join(f"{p.loss} x{p.epochs}" for p in config.recipe)
                self.log(f"  {role}: training {config.model} on {config.dataset}, recipe {recipe} ({folder})")

                def on_epoch(row: dict, checkpoint: Path) -> None:  # called on rank 0 only
                    self.local_store.add_metrics(run_id, [row])
                    self.local_store.add_checkpoint(run_id, str(checkpoint), int(row["epoch"]),
                                                    sha256_file(checkpoint))

                model = train(config, folder, data=self.dataset(config.dataset), resume=True, device=self.device,
                              progress=self.progress, log=lambda m: self.log(f"    {m}"), on_epoch=on_epoch,
                              tensorboard=folder / "tensorboard" if self.tensorboard else None).model
                self.store.add_checkpoint(run_id, str(folder / MODEL_FILE), config.total_epochs,
                                          sha256_file(folder / MODEL_FILE))
        if role != "model":
            self.store.set_status(run_id, "done")
        return model

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate_cell(self, cell: RunCell, model, run_id: int, run_dir: Path, substitutes: dict[str, Path]) -> None:
        # the plan with its objective and overrides applied, and "@NAME" substitutes resolved to folders
        attacks = [_with_substitute(spec, substitutes) for spec in cell.evaluate.plan()]
        config = dataclasses.replace(cell.evaluate, attacks=attacks, objective=None, overrides={})
        data = self.dataset(cell.train.dataset)
        evaluation = run_evaluation(
            model, data.test, config, device=self.device, cache_dir=run_dir / "chunks", progress=self.progress,
            log=lambda m: self.log(f"    {m}"),
            meta={"run": cell.hash, "dataset": cell.train.dataset, "model": cell.train.model, "labels": cell.labels},
        )
        if distributed.is_main():  # every rank holds the whole evaluation (engine.py gathers it)
            evaluation.save(run_dir / "records.npz")
        self.store.save_evaluation(run_id, evaluation, diagnostics_of(evaluation) if cell.evaluate.diagnostics else None)


def _with_substitute(spec: AttackSpec, substitutes: dict[str, Path]) -> AttackSpec:
    """Replace ``substitute: "@NAME"`` by the trained substitute's folder."""
    name = substitute_reference(spec)
    if name is None:
        return spec
    return dataclasses.replace(spec, params={**spec.params, "substitute": str(substitutes[name])})


class MainRankStore:
    """The results store as seen by every rank of a torchrun job: each call runs on rank 0 and
    its result (or exception) reaches every rank. All ranks make the same calls in the same
    order, because they take their decisions from these results."""

    def __init__(self, store: ResultsStore):
        self._store = store

    def __getattr__(self, name: str):
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute
        return lambda *args, **kwargs: distributed.from_main(lambda: attribute(*args, **kwargs))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
