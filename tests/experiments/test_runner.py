"""The experiment runner end to end: store contents, reuse, resume after SIGKILL, concurrent runs,
and the report built from the store alone."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustloss.experiments.runner import ExperimentRunner, sha256_file
from robustloss.experiments.schema import load_experiment
from robustloss.experiments.store import ResultsStore
from robustloss.report.experiment import build_report

CONFIG = """\
name: tiny-run
title: Tiny runner test
published: tiny.csv
claims:
  - {better: PC-LC, than: CE}
train:
  dataset: mnist-5k
  model: lenet5
  recipe: [{loss: ce, epochs: 3}]
  max_train_samples: 600
  batch_size: 100
evaluate:
  n_test: 60
  batch_size: 20
  diagnostics: false
  attacks:
    - {attack: fgsm, eps: [0.1, 0.2], label: FGSM}
    - {attack: pgd, eps: [0.1, 0.2], params: {steps: 8, step_size: 0.03}, label: PGD}
grid:
  method:
    CE: {}
    PC-LC: {train.recipe: [{loss: ce, epochs: 2}, {loss: pc, epochs: 2}]}
"""
PUBLISHED = ("section,method,row,param,metric,value\n,CE,clean,,accuracy,99.2\n,CE,FGSM,0.1,accuracy,71.5\n"
             ",PC-LC,FGSM,0.1,accuracy,80.0\n")
RUN = [sys.executable, "-c", "import sys; from robustloss.cli import main; sys.exit(main())"]


def write_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.csv").write_text(PUBLISHED)
    path = folder / "tiny.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    return path


def run_cli(config: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # progress lines arrive as they are printed
    return subprocess.Popen([*RUN, "run", str(config), "--root", str(root), "--no-progress", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def kill_after(process: subprocess.Popen, lines: int, delay: float) -> bool:
    """SIGKILL the run ``delay`` seconds after it printed ``lines`` lines (points spread over training
    and evaluation whatever the machine's speed); False if it finished first."""
    for _ in range(lines):
        if not process.stdout.readline():
            break
    time.sleep(delay)
    alive = process.poll() is None
    if alive:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=120)
    return alive


def snapshot(root: Path) -> dict:
    """Everything a finished run must reproduce exactly: weights, metrics, per-sample outcomes."""
    store = ResultsStore(root / "results.sqlite")
    out = {}
    for run in store.runs(experiment="tiny-run"):
        weights = torch.load(Path(run.model_dir) / "model.pt", weights_only=True)["state_dict"]
        evaluation = store.load_evaluation(run.id)
        metrics = [{k: v for k, v in m.items() if k != "seconds"} for m in store.metrics(run.id)]
        out[run.hash] = {
            "status": run.status, "weights": {k: v.clone() for k, v in weights.items()}, "metrics": metrics,
            "clean": evaluation.clean_pred.copy(),
            "records": [(r.name, r.eps, r.adv_pred.copy(), r.linf.copy()) for r in evaluation.records],
        }
    store.close()
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key]["status"] == b[key]["status"] == "done"
        assert a[key]["metrics"] == b[key]["metrics"]
        for name, tensor in a[key]["weights"].items():
            assert torch.equal(tensor, b[key]["weights"][name]), name
        np.testing.assert_array_equal(a[key]["clean"], b[key]["clean"])
        assert len(a[key]["records"]) == len(b[key]["records"])
        for (n1, e1, p1, l1), (n2, e2, p2, l2) in zip(a[key]["records"], b[key]["records"]):
            assert (n1, e1) == (n2, e2)
            np.testing.assert_array_equal(p1, p2)
            np.testing.assert_array_equal(l1, l2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist5k):
    """One uninterrupted in-process run of the tiny experiment."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = write_config(folder / "config")
    runner = ExperimentRunner(folder / "runs", device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    outcomes = runner.run(load_experiment(config))
    runner.store.close()
    return folder / "runs", config, outcomes


def test_run_fills_the_store(finished):
    root, _, outcomes = finished
    assert [o.status for o in outcomes] == ["done", "done"]
    store = ResultsStore(root / "results.sqlite")
    runs = store.runs(experiment="tiny-run")
    assert [r.status for r in runs] == ["done", "done"] and all(r.code_revision for r in runs)
    ce = runs[0]
    assert [m["epoch"] for m in store.metrics(ce.id)] == [1, 2, 3]
    final = [c for c in store.checkpoints(ce.id) if c["path"].endswith("model.pt")]
    assert final and final[0]["sha256"] == sha256_file(Path(final[0]["path"]))
    rows = store.evaluation_rows(ce.id)
    assert [(r["name"], r["eps"]) for r in rows] == [("FGSM", 0.1), ("FGSM", 0.2), ("PGD", 0.1), ("PGD", 0.2)]
    evaluation = store.load_evaluation(ce.id)
    assert evaluation.n == 60
    pgd = evaluation.find("PGD", 0.2)
    assert rows[3]["accuracy"] == pytest.approx(evaluation.accuracy(pgd))
    assert rows[3]["accuracy"] < evaluation.clean_accuracy  # the attack does something
    assert [c.cell for c in store.cells("tiny-run")] == [{"method": "CE"}, {"method": "PC-LC"}]


def test_rerun_reuses_everything_and_duplicates_nothing(finished, mnist5k):
    root, config, _ = finished
    counts_before = _row_counts(root)
    runner = ExperimentRunner(root, device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    assert [o.status for o in runner.run(load_experiment(config))] == ["reused", "reused"]
    runner.store.close()
    assert _row_counts(root) == counts_before


def _row_counts(root: Path) -> dict:
    with sqlite3.connect(root / "results.sqlite") as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("runs", "cells", "metrics", "checkpoints", "evaluations", "clean")}


def test_report_builds_from_the_store_alone(finished, tmp_path):
    root, _, _ = finished
    copy = tmp_path / "only-the-store.sqlite"
    shutil.copy(root / "results.sqlite", copy)  # no models, no run folders, no config files
    store = ResultsStore(copy)
    files = build_report(store, "tiny-run", tmp_path / "report", log=lambda _: None)
    table = files.table
    assert table.columns == ["CE", "PC-LC"]
    rows = {(r.row, r.param): r for r in table.sections[0].rows}
    evaluation = store.load_evaluation(store.runs(experiment="tiny-run")[0].id)
    assert rows[("FGSM", 0.1)].cells["CE"].mean == pytest.approx(100 * evaluation.accuracy(evaluation.find("FGSM", 0.1)))
    assert rows[("FGSM", 0.1)].cells["CE"].paper == 71.5 and rows[("clean", None)].cells["CE"].paper == 99.2
    assert ("worst case", 0.2) in rows
    worst = rows[("worst case", 0.2)].cells["CE"].mean
    assert worst <= min(rows[("FGSM", 0.2)].cells["CE"].mean, rows[("PGD", 0.2)].cells["CE"].mean)
    for path in [files.markdown, files.csv, files.latex, files.html, *files.plots]:
        assert path.exists() and path.stat().st_size > 200
    assert len(files.plots) == 3
    html = files.html.read_text()
    assert "data:image/png;base64," in html and "71.5" in html
    # The report opens with its title, once, then the Findings: the claim on the paper's row and our worst case.
    markdown = files.markdown.read_text()
    assert markdown.startswith("# Tiny runner test") and markdown.count("Tiny runner test") == 1
    assert html.count("Tiny runner test") == 2  # <title> and the one <h1>
    assert markdown.index("## Findings") < markdown.index("## Results") < markdown.index("| clean |")
    assert "**PC-LC is more robust than CE**" in markdown
    fgsm = next(line for line in markdown.splitlines() if line.startswith("| — | FGSM | 0.1 |"))
    ours = rows[("FGSM", 0.1)].cells["PC-LC"].mean - rows[("FGSM", 0.1)].cells["CE"].mean
    assert fgsm.split("|")[4].strip() == f"{ours:+.1f}" and fgsm.split("|")[7].strip() == "+8.5"
    assert sum(line.startswith("| — | *worst case* |") for line in markdown.splitlines()) == 2
    assert "<h2>Findings</h2>" in html


@pytest.mark.parametrize("kills", [2])
def test_resume_after_sigkill_matches_an_uninterrupted_run(finished, tmp_path, kills):
    """Kill the run at random moments (training or evaluation), re-run, and compare with one never killed."""
    reference_root, _, _ = finished
    config = write_config(tmp_path / "config")
    root = tmp_path / "runs"
    rng = random.Random(1234)
    killed = 0
    for _ in range(kills):
        # A full run prints ~25 lines (epochs of both models, then attacks); each re-run first
        # repeats a few lines about what it resumes.
        killed += kill_after(run_cli(config, root), rng.randrange(3, 18), rng.uniform(0.0, 0.5))
    final = run_cli(config, root)
    output, _ = final.communicate(timeout=300)
    assert final.returncode == 0, output
    assert killed >= 1, "the run finished before any kill; lengthen the experiment"
    assert_same(snapshot(root), snapshot(reference_root))
    assert _row_counts(root) == _row_counts(reference_root)


def test_two_processes_on_one_store_share_the_work(finished, tmp_path):
    reference_root, _, _ = finished
    config = write_config(tmp_path / "config")
    root = tmp_path / "runs"
    first, second = run_cli(config, root), run_cli(config, root)
    out1, _ = first.communicate(timeout=300)
    out2, _ = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, out1 + out2
    # Each model was trained by exactly one of the processes; the other reused it.
    assert (out1 + out2).count("model: training") == 2
    with sqlite3.connect(root / "results.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert_same(snapshot(root), snapshot(reference_root))


def test_a_kill_between_checkpoint_and_store_row_loses_no_metrics(finished, tmp_path, mnist5k, monkeypatch):
    """The window SIGKILL can hit by chance, made certain: epoch 3's checkpoint is on disk but its
    store row is never written. The resumed run starts at epoch 4 and must still record epoch 3."""
    reference_root, config, _ = finished
    root = tmp_path / "runs"
    add_metrics = ResultsStore.add_metrics

    def dies_on_epoch_3(self, run_id, rows):
        if [r["epoch"] for r in rows] == [3] and not getattr(dies_on_epoch_3, "fired", False):
            dies_on_epoch_3.fired = True
            raise KeyboardInterrupt  # as abrupt as it gets in-process; the runner does not catch it
        return add_metrics(self, run_id, rows)

    monkeypatch.setattr(ResultsStore, "add_metrics", dies_on_epoch_3)
    runner = ExperimentRunner(root, device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    with pytest.raises(KeyboardInterrupt):
        runner.run(load_experiment(config))
    runner.store.close()
    runner = ExperimentRunner(root, device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    assert [o.status for o in runner.run(load_experiment(config))] == ["done", "done"]
    runner.store.close()
    assert_same(snapshot(root), snapshot(reference_root))
    assert _row_counts(root) == _row_counts(reference_root)  # epoch 3's checkpoint row too
