"""The corruption table: every file robustloss writes, damaged three ways, gets a clean refusal or an
exact recomputation, never silently wrong numbers.

Each file is (a) truncated to half its size, (b) given 16 inverted bytes in its middle, (c) overwritten
with random bytes of the same length. Then the command that reads it runs as a user would run it, in a
subprocess (``python -m robustloss``). Accepted outcomes:

* refusal: exit status 1, a ``robustloss: error:`` line that names the file, no traceback;
* recomputation: exit status 0 and results equal to those of the undamaged run.

Files that no robustloss command reads back (evaluation records, saved adversarial examples) are
checked through their Python loaders, and rewritten by rerunning the command that wrote them. The
results store (results.sqlite) has its own tests. Runs are trained once per module and copied per case.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from robustloss.checkpoint import safe_load
from robustloss.cli import main
from robustloss.errors import CheckpointError, ResultsFileError
from robustloss.evaluate import Evaluation
from robustloss.experiments.runner import ExperimentRunner
from robustloss.experiments.schema import load_experiment
from robustloss.models import create_model
from robustloss.models.saved import load_model
from robustloss.report.experiment import build_report
from robustloss.train import Phase, TrainConfig, train
from robustloss.train.config import AdversarialConfig, GuardConfig
from robustloss.train.overfitting_guard import OverfittingGuard

DAMAGES = ["truncated", "flipped", "garbage"]
CONFIG = TrainConfig(recipe=[Phase("ce", 3)], max_train_samples=300, batch_size=100, seed=0)
EVAL = ["--attacks", "fgsm,pgd", "--eps", "0.1", "--steps", "3", "--n-test", "60", "--batch-size", "20",
        "--save-adv", "--device", "cpu", "--no-progress"]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :])
    else:
        path.write_bytes(np.random.default_rng(len(data)).bytes(max(len(data), 64)))
    assert path.read_bytes() != data


def robustloss(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustloss", *map(str, args)], capture_output=True, text=True,
                          timeout=600, check=False)


def concurrently(commands: dict[str, list]) -> dict[str, subprocess.CompletedProcess]:
    """Run one command per damage at the same time (each case waits mostly on importing torch)."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        futures = {how: pool.submit(robustloss, *argv) for how, argv in commands.items()}
        return {how: future.result() for how, future in futures.items()}


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def assert_succeeded(result: subprocess.CompletedProcess, how: str) -> None:
    assert result.returncode == 0, f"{how}: {output(result)}"


def assert_refused(result: subprocess.CompletedProcess, path: Path, how: str, *advice: str) -> None:
    assert result.returncode == 1, f"{how}: {output(result)}"
    assert "Traceback" not in output(result), f"{how}: {output(result)}"
    lines = [line for line in result.stderr.splitlines() if line.startswith("robustloss: error:")]
    assert len(lines) == 1, f"{how}: {output(result)}"
    assert str(path) in lines[0] and all(text in lines[0] for text in advice), f"{how}: {lines[0]}"


def resume(run: Path, settings: Path | None = None) -> list:
    return ["train", "--config", settings or run / "config.yaml", "--out", run, "--resume", "--device", "cpu",
            "--no-progress"]


def weights(path: Path) -> dict:
    return load_model(path)[0].state_dict()


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metric_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def made(mnist5k, tmp_path_factory) -> dict[str, Path]:
    """A finished run evaluated with `robustloss eval`, and the same run killed after epoch 2 of 3."""
    root = tmp_path_factory.mktemp("made")
    quiet = {"progress": False, "log": lambda _: None, "device": "cpu"}
    train(CONFIG, root / "finished" / "run", data=mnist5k, **quiet)

    def killed_in_epoch_3(message: str) -> None:
        if "epoch 3/3" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CONFIG, root / "killed" / "run", data=mnist5k, progress=False, device="cpu", log=killed_in_epoch_3)
    assert main(["eval", str(root / "finished" / "run"), *EVAL]) == 0
    shutil.copy(root / "finished" / "run" / "config.yaml", root / "settings.yaml")  # the run's settings, kept apart
    return {"finished": root / "finished" / "run", "killed": root / "killed" / "run",
            "settings": root / "settings.yaml"}


def damaged_copies(made: dict[str, Path], which: str, tmp_path: Path, *files: str) -> dict[str, Path]:
    """One copy of the ``which`` run per damage, with ``files`` (paths inside the run) damaged that way.
    Every copy is a folder named ``run``, like the original: reports quote the folder's name."""
    runs = {}
    for how in DAMAGES:
        runs[how] = Path(shutil.copytree(made[which], tmp_path / how / "run"))
        for name in files:
            damage(runs[how] / name, how)
    return runs


# -- training files: read by `robustloss train --resume` and `robustloss eval` ---------------------------


def test_last_checkpoint_falls_back_to_the_previous_one(made, tmp_path):
    runs = damaged_copies(made, "killed", tmp_path, "checkpoints/last.pt")
    for how, result in concurrently({how: resume(run) for how, run in runs.items()}).items():
        assert_succeeded(result, how)
        assert f"{runs[how] / 'checkpoints' / 'last.pt'} is damaged" in result.stdout, how
        assert same_weights(runs[how] / "model.pt", made["finished"] / "model.pt"), how


def test_last_checkpoint_without_a_previous_one_is_refused(made, tmp_path):
    runs = damaged_copies(made, "finished", tmp_path, "checkpoints/last.pt")  # a finished run keeps last.pt only
    for how, result in concurrently({how: resume(run) for how, run in runs.items()}).items():
        assert_refused(result, runs[how] / "checkpoints" / "last.pt", how, "Delete", "--resume")


def test_previous_checkpoint_and_metrics_are_replaced(made, tmp_path):
    """previous.pt is not needed while last.pt is intact, and metrics.csv is rewritten from the history
    that last.pt carries; both are checked in one resume per damage."""
    runs = damaged_copies(made, "killed", tmp_path, "checkpoints/previous.pt", "metrics.csv")
    for how, result in concurrently({how: resume(run) for how, run in runs.items()}).items():
        assert_succeeded(result, how)
        assert same_weights(runs[how] / "model.pt", made["finished"] / "model.pt"), how
        assert metric_rows(runs[how] / "metrics.csv") == metric_rows(made["finished"] / "metrics.csv"), how
        assert not (runs[how] / "checkpoints" / "previous.pt").exists(), how


def test_model_file_is_refused_then_rewritten_as_the_error_says(made, tmp_path):
    runs = damaged_copies(made, "finished", tmp_path, "model.pt")
    for how, result in concurrently({how: ["eval", run, *EVAL] for how, run in runs.items()}).items():
        assert_refused(result, runs[how] / "model.pt", how, "robustloss train --config", "--resume")
    run = runs["garbage"]  # the advice does not depend on the damage: followed once
    (run / "model.pt").unlink()
    assert_succeeded(robustloss(*resume(run)), "garbage")
    assert same_weights(run / "model.pt", made["finished"] / "model.pt")


def test_run_config_is_refused_or_restored(made, tmp_path):
    runs = damaged_copies(made, "killed", tmp_path, "config.yaml")
    for how, result in concurrently({how: resume(run, made["settings"]) for how, run in runs.items()}).items():
        if result.returncode == 0:  # damage that left the same settings: rewritten in full, training went on
            assert (runs[how] / "config.yaml").read_text() == made["settings"].read_text(), how
            assert same_weights(runs[how] / "model.pt", made["finished"] / "model.pt"), how
        else:
            assert_refused(result, runs[how] / "config.yaml", how)


def test_guard_best_checkpoint_is_refused_when_the_guard_needs_it(tmp_path, mnist5k, monkeypatch):
    """The guard reads guard-best.pt only on a collapse: force one, with the file damaged."""
    for how in DAMAGES:
        adversarial = AdversarialConfig(method="fgsm", eps=0.1, guard=GuardConfig(held_out=10))
        guard = OverfittingGuard(adversarial.guard, adversarial, mnist5k.test.subset(slice(0, 10)), tmp_path / how,
                                 seed=0)
        model, loss = create_model("lenet5"), torch.nn.Module()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        accuracies = iter([0.9, 0.1])  # a best epoch, then a collapse
        monkeypatch.setattr(guard, "held_out_accuracy", lambda _model, measured=accuracies: next(measured))
        guard.after_epoch(1, 0, model, optimizer, loss)
        best = tmp_path / how / "checkpoints" / "guard-best.pt"
        damage(best, how)
        with pytest.raises(CheckpointError, match="guard cannot restore its best epoch") as raised:
            guard.after_epoch(2, 0, model, optimizer, loss)
        assert str(best) in str(raised.value) and "\n" not in str(raised.value), how


# -- evaluation files: chunks are read by `robustloss eval`; records and examples by their loaders ------

OUTPUTS = {"chunk": "eval/chunks", "records": "eval/records.npz", "adversarial": "eval/adversarial",
           "results.md": "eval/results.md", "results.csv": "eval/results.csv"}


def evaluation_outputs(run: Path) -> dict[str, Path]:
    """The evaluation's files: for the chunks and the examples, the first of their folder."""
    files = {name: run / relative for name, relative in OUTPUTS.items()}
    files["chunk"] = min(files["chunk"].glob("*.npz"))
    files["adversarial"] = min(files["adversarial"].glob("*.pt"))
    return files


def same_records(a: Evaluation, b: Evaluation) -> bool:
    def arrays(e: Evaluation) -> list[np.ndarray]:
        return [e.index, e.labels, e.clean_pred] + [getattr(r, n) for r in e.records
                                                    for n in ("adv_pred", "linf", "l2", "queries")]

    return [(r.name, r.eps) for r in a.records] == [(r.name, r.eps) for r in b.records] and all(
        np.array_equal(x, y, equal_nan=True) for x, y in zip(arrays(a), arrays(b)))


def test_evaluation_files_are_refused_or_recomputed(made, tmp_path):
    """One damaged chunk, records file, adversarial-examples file and results table per copy: the loaders
    refuse the records and the examples, and a rerun of the same `robustloss eval` recomputes the chunk
    and rewrites every file exactly as the undamaged evaluation wrote it."""
    reference = evaluation_outputs(made["finished"])
    relative = [str(path.relative_to(made["finished"])) for path in reference.values()]
    runs = damaged_copies(made, "finished", tmp_path, *relative)
    for how, run in runs.items():
        files = evaluation_outputs(run)
        with pytest.raises(ResultsFileError, match="Rerun the evaluation") as refused:
            Evaluation.load(files["records"])
        assert str(files["records"]) in str(refused.value), how
        with pytest.raises(CheckpointError) as refused:
            safe_load(files["adversarial"])
        assert str(files["adversarial"]) in str(refused.value), how

    for how, result in concurrently({how: ["eval", run, *EVAL] for how, run in runs.items()}).items():
        assert_succeeded(result, how)
        files = evaluation_outputs(runs[how])
        assert f"evaluation chunk {files['chunk']} is damaged" in result.stderr, how
        assert same_records(Evaluation.load(files["records"]), Evaluation.load(reference["records"])), how
        for name in ("results.md", "results.csv"):
            assert files[name].read_bytes() == reference[name].read_bytes(), (how, name)
        with np.load(files["chunk"]) as got, np.load(reference["chunk"]) as want:
            assert got.files == want.files and all(np.array_equal(got[k], want[k]) for k in got.files), how
        got, want = safe_load(files["adversarial"]), safe_load(reference["adversarial"])
        assert torch.equal(got["x_adv"], want["x_adv"]) and torch.equal(got["index"], want["index"]), how


# -- reports: written by `robustloss report` from the results store ---------------------------------------

EXPERIMENT = """\
name: tiny-reliability
title: Reliability test
train: {dataset: mnist-5k, model: lenet5, recipe: [{loss: ce, epochs: 1}], max_train_samples: 300, batch_size: 100}
evaluate:
  n_test: 20
  batch_size: 20
  diagnostics: false
  attacks: [{attack: fgsm, eps: [0.1], label: FGSM}]
grid: {method: {CE: {}}}
"""


@pytest.fixture(scope="module")
def reported(mnist5k, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path_factory.mktemp("reported")
    (folder / "tiny.yaml").write_text(textwrap.dedent(EXPERIMENT))
    runner = ExperimentRunner(folder / "root", device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    runner.run(load_experiment(folder / "tiny.yaml"))
    files = build_report(runner.store, "tiny-reliability", folder / "reports", log=lambda _: None)
    runner.store.close()
    tables = {path.name: path.read_bytes() for path in (files.markdown, files.csv, files.latex, files.html)}
    return folder, tables


def test_reports_are_rewritten_by_report(reported, tmp_path):
    folder, tables = reported
    outs = {}
    for how in DAMAGES:
        outs[how] = Path(shutil.copytree(folder / "reports", tmp_path / how))
        for name in tables:
            damage(outs[how] / name, how)
    commands = {how: ["report", "tiny-reliability", "--root", folder / "root", "--out", out]
                for how, out in outs.items()}
    for how, result in concurrently(commands).items():
        assert_succeeded(result, how)
        for name, content in tables.items():
            assert (outs[how] / name).read_bytes() == content, (how, name)

