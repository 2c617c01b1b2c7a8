"""Clean test error against wall-clock training time (MMC paper, Fig. 3a), from metrics.csv."""

from __future__ import annotations

import csv

import pytest

from robustloss.analysis.registry import Subject, run_analysis
from robustloss.analysis.training_time import read_training_curve, reference_curve, summary_rows
from robustloss.analysis.training_time_plots import plot_training_curves, time_unit
from robustloss.cli import main
from robustloss.errors import ConfigError
from robustloss.train import Phase, TrainConfig, train
from robustloss.train.run_folder import write_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(folder, seconds, test_acc, phase="ce", adversarial=False):
    """A metrics.csv as the trainer writes it (its writer, its columns, in its order)."""
    rows = []
    for epoch, (s, acc) in enumerate(zip(seconds, test_acc), start=1):
        row = {"epoch": epoch, "phase": phase, "lr": 0.01, "train_loss": 1.0 / epoch, "train_acc": 0.5}
        if adversarial:
            row["adv_fraction"] = 1.0
        rows.append(row | {"test_acc": acc, "seconds": s})
    folder.mkdir(parents=True)
    write_metrics(folder / "metrics.csv", rows)
    return folder


@pytest.fixture
def runs(tmp_path):
    """SCE, MMC (25% slower per epoch, converges faster) and AT (5x slower, never as accurate)."""
    return {
        "SCE": write_run(tmp_path / "sce", [2.0, 2.0, 2.0], [0.70, 0.88, 0.92]),
        "MMC-10": write_run(tmp_path / "mmc", [2.5, 2.5, 2.5], [0.80, 0.92, 0.94], phase="mmc"),
        "AT": write_run(tmp_path / "at", [10.0, 10.0, 10.0], [0.60, 0.75, 0.82], adversarial=True),
    }


def subjects(runs):
    return [Subject(label, model=None, test=None, device=None, folder=folder) for label, folder in runs.items()]


def test_curve_has_the_cumulative_seconds_and_errors_of_the_file(tmp_path):
    folder = write_run(tmp_path / "run", [1.5, 2.5, 3.0], [0.75, 0.9, 0.95])
    curve = read_training_curve(folder, "SCE")
    assert curve.epochs == [1, 2, 3] and curve.phases == ["ce"] * 3
    assert curve.cumulative_seconds == [1.5, 4.0, 7.0]
    assert curve.test_error == pytest.approx([25.0, 10.0, 5.0])
    assert curve.total_seconds == 7.0 and curve.seconds_per_epoch == pytest.approx(7.0 / 3)
    assert curve.seconds_to_reach(10.0) == 4.0 and curve.seconds_to_reach(4.9) is None


def test_summary_times_every_model_against_the_first(runs):
    curves = [read_training_curve(folder, label) for label, folder in runs.items()]
    rows = summary_rows(curves, reference_curve(curves, None))
    sce, mmc, at = rows
    assert sce == {"model": "SCE", "epochs": 3, "final error %": 8.0, "best error %": 8.0, "seconds": 6.0,
                   "s/epoch": 2.0, "time / SCE": 1.0, "s/epoch / SCE": 1.0, "s to SCE's final error": 6.0}
    # MMC: 7.5 s in all, 1.25x SCE; its error is 8% (SCE's final) after epoch 2, at 5.0 s.
    assert (mmc["seconds"], mmc["time / SCE"], mmc["s to SCE's final error"]) == (7.5, 1.25, 5.0)
    assert (mmc["final error %"], mmc["best error %"]) == (6.0, 6.0)
    assert (at["time / SCE"], at["s/epoch / SCE"], at["s to SCE's final error"]) == (5.0, 5.0, "not reached")


def test_analysis_writes_the_figure_and_both_tables(runs, tmp_path):
    out = tmp_path / "out"
    result = run_analysis("training-time", subjects(runs), out, prefix="x-", reference="MMC-10")
    assert [p.name for p in result.files] == ["x-training-time.png", "x-training-time.csv",
                                              "x-training-time-summary.csv"]
    assert result.files[0].read_bytes()[:8] == PNG_SIGNATURE and result.files[0].stat().st_size > 5000
    with open(result.files[1], newline="") as f:
        points = list(csv.DictReader(f))
    assert [(p["model"], float(p["cumulative_seconds"]), float(p["test_error_%"])) for p in points[3:6]] == [
        ("MMC-10", 2.5, 20.0), ("MMC-10", 5.0, 8.0), ("MMC-10", 7.5, 6.0)]
    assert [r["model"] for r in result.summary] == ["SCE", "MMC-10", "AT"]
    assert result.summary[0]["time / MMC-10"] == 0.8 and result.summary[2]["time / MMC-10"] == 4.0
    assert "SCE: final clean error 8.00% after 3 epochs, 6.0s (2.00s/epoch, 0.80x MMC-10 per epoch)" \
        in result.lines[0]


def test_bad_inputs_are_named(runs, tmp_path):
    with pytest.raises(ConfigError, match="reference 'GCE' is not one of the models: SCE, MMC-10, AT"):
        run_analysis("training-time", subjects(runs), tmp_path, reference="GCE")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.csv").write_text("epoch,train_loss,test_acc\n1,0.5,0.9\n")
    with pytest.raises(ConfigError, match="no column seconds"):
        read_training_curve(tmp_path / "old", "old")
    with pytest.raises(ConfigError, match="no such file"):
        read_training_curve(tmp_path / "nowhere", "x")
    with pytest.raises(ValueError, match="no model folder"):
        run_analysis("training-time", [Subject("SCE", None, None, None)], tmp_path)


@pytest.mark.parametrize("longest, unit", [(90.0, "s"), (300.0, "s"), (301.0, "min"), (10800.0, "min"),
                                           (50000.0, "h")])
def test_time_axis_unit(longest, unit):
    assert time_unit(longest)[0] == unit


def test_a_zero_error_keeps_the_axis_linear(tmp_path):
    curve = read_training_curve(write_run(tmp_path / "run", [1.0, 1.0], [0.9, 1.0]), "perfect")
    path = plot_training_curves([curve], tmp_path / "curve.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_real_training_run_and_the_cli(tmp_path, mnist5k, capsys):
    """The trainer's own metrics.csv, read through `robustloss analyze training-time`."""
    folder = tmp_path / "sce"
    history = train(TrainConfig(recipe=[Phase("ce", 2)], max_train_samples=200, batch_size=100, seed=0), folder,
                    data=mnist5k, progress=False, log=lambda _: None, device="cpu").history
    curve = read_training_curve(folder, "SCE")
    assert curve.cumulative_seconds == pytest.approx([history[0]["seconds"], history[0]["seconds"]
                                                      + history[1]["seconds"]])
    assert curve.test_error == pytest.approx([100 * (1 - row["test_acc"]) for row in history])
    out = tmp_path / "out"
    assert main(["analyze", "training-time", str(folder), str(folder), "--label", "SCE", "--label", "again",
                 "--reference", "again", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "SCE: final clean error" in printed and "1.00x again per epoch" in printed
    assert (out / "training-time.png").exists() and (out / "training-time-summary.csv").exists()
