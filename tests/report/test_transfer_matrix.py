"""The transfer matrix from hand-built records: which record goes in which cell, the CSV, the figure."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from robustloss.evaluate.records import AttackRecord, Evaluation
from robustloss.report.transfer_matrix import (MatrixRun, collect_transfer_matrices, eps_text, matrix_csv,
                                               matrix_markdown, write_transfer_matrices)

N = 20  # images per evaluation, all labelled 0 and clean-correct


def record(substitute: str, robust: int, *, eps: float = 8 / 255, method: str = "pgd", steps: int = 10,
           objective: str = "ce") -> AttackRecord:
    """A transfer record crafted on the model folder ``substitute`` that left ``robust`` of N images correct."""
    adv = np.array([0] * robust + [1] * (N - robust), np.int64)
    params = {"eps": eps, "targeted": False, "objective": objective, "substitute": substitute, "method": method,
              "method_params": {"steps": steps, "step_size": 2 / 255}}
    return AttackRecord("transfer", eps, params, adv, np.full(N, eps, np.float32), np.zeros(N, np.float32),
                        np.zeros(N, np.int64), label=f"{method} from {substitute}")


def evaluation(*records: AttackRecord, clean_wrong: int = 0) -> Evaluation:
    clean = np.array([1] * clean_wrong + [0] * (N - clean_wrong), np.int64)
    return Evaluation(np.arange(N), np.zeros(N, np.int64), clean, list(records))


def test_rows_are_substitutes_and_columns_targets_in_the_grids_order():
    # Target "B" is listed first; the records of each target are in another order than the grid's.
    runs = [MatrixRun("B", "", "hb", evaluation(record("runs/models/ha", 5), record("runs/models/hb", 1))),
            MatrixRun("A", "", "ha", evaluation(record("runs/models/hb", 12), record("runs/models/ha", 2)))]
    (matrix,) = collect_transfer_matrices(runs)
    assert matrix.sources == ["B", "A"] and matrix.targets == ["B", "A"]
    assert matrix.values.shape == (2, 2)
    # value(source, target): crafted on source's folder, evaluated on target's run
    assert matrix.value("A", "B") == pytest.approx(25.0)   # 5 of 20
    assert matrix.value("B", "B") == pytest.approx(5.0)    # the diagonal: B attacked through itself
    assert matrix.value("B", "A") == pytest.approx(60.0)
    assert matrix.value("A", "A") == pytest.approx(10.0)
    assert (matrix.attack, matrix.eps, matrix.title) == ("PGD", 8 / 255, "PGD, ε = 8/255")


def test_one_matrix_per_attack_and_eps_with_clean_errors_counted_and_seeds_averaged():
    sub = "/root/models/ha/model.pt"  # a model file rather than its folder names the same model
    runs = [MatrixRun("A", "S", "ha", evaluation(record(sub, 10), record(sub, 4, eps=16 / 255),
                                                 record(sub, 8, method="mim"), clean_wrong=0)),
            MatrixRun("A", "S", "ha", evaluation(record(sub, 14), record(sub, 6, eps=16 / 255),
                                                 record(sub, 8, method="mim"), clean_wrong=0))]
    matrices = collect_transfer_matrices(runs)  # two seeds of one model: same label, averaged
    assert [(m.attack, eps_text(m.eps)) for m in matrices] == [("PGD", "8/255"), ("PGD", "16/255"), ("MIM", "8/255")]
    assert matrices[0].value("A", "A") == pytest.approx(60.0)  # (50 + 70) / 2
    assert matrices[1].value("A", "A") == pytest.approx(25.0)  # (20 + 30) / 2
    # a clean-misclassified image is a failure under every attack (the papers' convention)
    runs = [MatrixRun("A", "", "ha", evaluation(record("m/ha", 20), clean_wrong=5))]
    assert collect_transfer_matrices(runs)[0].value("A", "A") == pytest.approx(75.0)


def test_budgets_are_written_as_the_papers_write_them():
    assert [eps_text(e) for e in (8 / 255, 16 / 255, 0.2, 0.3, 0.04)] == ["8/255", "16/255", "0.2", "0.3", "0.04"]


def test_the_objective_resolved_per_target_does_not_split_an_attack_but_other_steps_do():
    runs = [MatrixRun("A", "", "ha", evaluation(record("m/ha", 10, objective="ce"), record("m/hb", 10, steps=40))),
            MatrixRun("B", "", "hb", evaluation(record("m/ha", 10, objective="mmc")))]
    titles = sorted(m.attack for m in collect_transfer_matrices(runs))
    assert titles == ["PGD-10", "PGD-40"]


def test_substitutes_outside_the_grid_and_missing_cells():
    runs = [MatrixRun("A", "", "ha", evaluation(record("runs/models/cnn3-elsewhere", 3))),
            MatrixRun("B", "", "hb", None)]  # not evaluated yet
    assert collect_transfer_matrices(runs) == []
    assert write_transfer_matrices(runs, "/nonexistent-never-written", "x") is None
    runs = [MatrixRun("A", "", "ha", evaluation(record("m/ha", 3), record("m/hb", 4))),
            MatrixRun("B", "", "hb", evaluation(record("m/hb", 5)))]
    (matrix,) = collect_transfer_matrices(runs)
    assert math.isnan(matrix.value("A", "B")) and matrix.value("B", "B") == pytest.approx(25.0)
    assert "| A | *15.0* | — |" in matrix_markdown(matrix)


def test_csv_and_figure_are_written(tmp_path):
    runs = [MatrixRun("SCE", "CIFAR-10", "ha", evaluation(record("m/ha", 2), record("m/hb", 9))),
            MatrixRun("AT(MMC, 10)", "CIFAR-10", "hb", evaluation(record("m/ha", 15), record("m/hb", 11)))]
    files = write_transfer_matrices(runs, tmp_path, "exp-smoke")
    assert files is not None
    rows = list(csv.reader(io.StringIO(files.csv.read_text())))
    assert rows[0] == ["section", "attack", "eps", "substitute", "SCE", "AT(MMC, 10)"]
    assert rows[1] == ["CIFAR-10", "PGD", "0.0313725", "SCE", "10.0000", "75.0000"]
    assert rows[2] == ["CIFAR-10", "PGD", "0.0313725", "AT(MMC, 10)", "45.0000", "55.0000"]
    assert matrix_csv(files.matrices) == files.csv.read_text()
    (png, caption), = files.plots
    assert png == tmp_path / "exp-smoke-transfer-matrix.png" and "white-box" in caption
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "## Transfer matrix" in files.markdown() and png.name in files.markdown()
