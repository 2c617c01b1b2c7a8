"""Evaluation engine: per-sample records, the papers' accuracy convention, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustloss.evaluate import AttackSpec, Evaluation, evaluate, pc_table1_plan
from robustloss.evaluate.records import AttackRecord
from robustloss.reference import load_published
from robustloss.report import compare_with_paper, to_markdown, write_comparison

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


@pytest.fixture(scope="module")
def evaluation(trained_lenet, mnist5k):
    plan = [AttackSpec("fgsm", [0.1, 0.3]), AttackSpec("pgd", [0.1], {"steps": 10, "step_size": 0.02})]
    return evaluate(trained_lenet, mnist5k.test, plan, max_samples=300, batch_size=128, seed=5, **QUIET)


def test_records_cover_every_sample_and_attack(evaluation, trained_lenet, mnist5k):
    assert evaluation.n == 300
    assert [(r.attack, r.eps) for r in evaluation.records] == [("fgsm", 0.1), ("fgsm", 0.3), ("pgd", 0.1)]
    x, y = mnist5k.test.batch(slice(0, 300))
    with torch.no_grad():
        clean = trained_lenet(x).argmax(1).numpy()
    assert np.array_equal(evaluation.clean_pred, clean)
    assert np.array_equal(evaluation.labels, y.numpy())
    for record in evaluation.records:
        assert record.adv_pred.shape == (300,)
        # clean-misclassified samples are failures anyway and are never attacked
        assert np.array_equal(record.attacked, evaluation.clean_correct)
        assert (record.linf[record.attacked] <= record.eps + 1e-5).all()
        assert record.params["objective"] == "ce"


def test_accuracy_counts_clean_mistakes_as_failures():
    labels = np.array([0, 1, 2, 3])
    clean = np.array([0, 1, 2, 9])  # sample 3 is misclassified without any attack
    record = AttackRecord("fgsm", 0.1, {}, adv_pred=np.array([0, 5, 2, -1]), linf=np.zeros(4, np.float32),
                          l2=np.zeros(4, np.float32), queries=np.ones(4, np.int64))
    ev = Evaluation(np.arange(4), labels, clean, [record])
    # sample 3 is wrong without any attack: it is not attacked and counts as a failure
    assert ev.robust(record).tolist() == [True, False, True, False]
    assert ev.fooled(record).tolist() == [False, True, False, False]
    assert ev.accuracy(record) == 0.5
    assert ev.clean_accuracy == 0.75


def test_larger_budget_is_not_weaker(evaluation):
    weak, strong = evaluation.find("fgsm", 0.1), evaluation.find("fgsm", 0.3)
    assert evaluation.accuracy(strong) < evaluation.accuracy(weak) < evaluation.clean_accuracy


def test_same_seed_same_records(evaluation, trained_lenet, mnist5k):
    plan = [AttackSpec("fgsm", [0.1, 0.3]), AttackSpec("pgd", [0.1], {"steps": 10, "step_size": 0.02})]
    again = evaluate(trained_lenet, mnist5k.test, plan, max_samples=300, batch_size=128, seed=5, **QUIET)
    for a, b in zip(evaluation.records, again.records):
        assert np.array_equal(a.adv_pred, b.adv_pred) and np.array_equal(a.linf, b.linf, equal_nan=True)


def test_save_and_load_round_trip(evaluation, tmp_path):
    path = evaluation.save(tmp_path / "records.npz")
    loaded = Evaluation.load(path)
    assert loaded.meta == evaluation.meta
    assert np.array_equal(loaded.clean_pred, evaluation.clean_pred)
    for a, b in zip(evaluation.records, loaded.records):
        assert (a.attack, a.eps, a.params) == (b.attack, b.eps, b.params)
        assert np.array_equal(a.adv_pred, b.adv_pred) and np.array_equal(a.queries, b.queries)


def test_pc_table1_plan_uses_paper_settings():
    plan = pc_table1_plan()
    assert [s.attack for s in plan] == ["fgsm", "bim", "pgd", "mim"]
    assert all(s.eps == [0.1, 0.2, 0.3] for s in plan)
    pgd = plan[2].build(0.3)
    assert (pgd.steps, pgd.step_size) == (40, 0.01)


def test_published_table_values():
    table = load_published("pc-table1")
    assert table.get("mnist", "pgd", 0.1, "ce") == 49.0
    assert table.get("mnist", "pgd", 0.1, "pc") == 72.3
    assert table.get("mnist", "clean", None, "pc") == 99.2
    assert table.get("svhn", "mim", 0.2, "pc") == 26.0
    assert table.get("fashion-mnist", "cw", 0.0, "ce") == 0.2
    assert len(table.cells) == 14 * 5 * 2


def test_comparison_table_layout(evaluation, tmp_path):
    rows, missing = compare_with_paper({"ce": evaluation}, load_published("pc-table1"), "mnist")
    assert [(r.attack, r.eps) for r in rows][:3] == [("clean", None), ("fgsm", 0.1), ("fgsm", 0.3)]
    assert "bim 0.1" in missing and "cw 0" in missing
    fgsm = rows[1]
    assert fgsm.paper["ce"] == 71.5
    assert fgsm.ours["ce"] == pytest.approx(100 * evaluation.accuracy(evaluation.find("fgsm", 0.1)))
    markdown = write_comparison({"ce": evaluation}, {"ce": "CE"}, "mnist-5k", tmp_path, title="t",
                                published="pc-table1")
    assert "| Clean | - |" in markdown and "71.5" in markdown and "clean-misclassified" in markdown
    csv_text = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_text[0] == "attack,eps,method,ours,paper,difference"
    assert any(line.startswith("fgsm,0.1,ce,") and ",71.5," in line for line in csv_text)
    assert to_markdown(rows, {"ce": "CE"}, "t", []).count("FGSM") == 1  # attack name shown once per block
