"""The SQLite results store: schema and migrations, runs, training logs, evaluations, export, concurrency."""

from __future__ import annotations

import csv
import itertools
import json
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from robustloss.errors import RobustlossError
from robustloss.evaluate.diagnostics import Diagnostic
from robustloss.evaluate.records import NOT_ATTACKED, AttackRecord, Evaluation
from robustloss.experiments.store import migrations, results_store
from robustloss.experiments.store import SCHEMA_VERSION, ResultsStore, StoreError

TABLES = {"meta", "runs", "cells", "checkpoints", "metrics", "evaluations", "clean", "diagnostics"}
EPS = 8 / 255


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def add_run(store: ResultsStore, hash: str = "a1b2c3d4e5f6", experiment: str = "table1", name: str = "ce") -> int:
    return store.upsert_run(hash=hash, experiment=experiment, name=name, config={"loss": name, "epochs": 3})


def make_evaluation(n_records: int = 3, index_start: int = 10) -> Evaluation:
    """Six samples, one clean mistake; a PGD record with skipped samples, an unbounded CW-L2 and a targeted PGD."""
    index = np.arange(index_start, index_start + 6, dtype=np.int64)
    labels = np.array([0, 1, 2, 3, 4, 5], dtype=np.int64)
    clean_pred = np.array([0, 1, 2, 3, 4, 9], dtype=np.int64)
    pgd = AttackRecord(
        attack="pgd", eps=EPS, params={"steps": 10, "step_size": 2 / 255, "objective": "ce"},
        adv_pred=np.array([0, 7, NOT_ATTACKED, 3, 1, NOT_ATTACKED], dtype=np.int64),
        linf=np.array([0.01, 0.03, 0, 0.02, 0.031, 0], dtype=np.float32),
        l2=np.array([0.5, 1.2, 0, 0.7, 1.5, 0], dtype=np.float32),
        queries=np.array([10, 10, 0, 10, 10, 0], dtype=np.int64), seconds=1.25)
    cw = AttackRecord(
        attack="cw", eps=None, params={"c": 1.0, "objective": "margin"}, norm="l2", label="CW-L2",
        adv_pred=np.array([8, 8, 8, 3, 8, 8], dtype=np.int64),
        linf=np.array([0.1, 0.2, 0.3, 0.0, 0.2, 0.1], dtype=np.float32),
        l2=np.array([0.9, 1.1, 1.3, 0.0, 1.0, 0.8], dtype=np.float32),
        queries=np.full(6, 100, dtype=np.int64), seconds=4.0)
    targeted = AttackRecord(
        attack="pgd", eps=EPS, params={"steps": 10, "step_size": 2 / 255, "objective": "ce", "targeted": True},
        label="pgd-targeted", target=np.array([1, 2, 3, 4, 5, 0], dtype=np.int64),
        adv_pred=np.array([1, 1, 3, 3, 4, 5], dtype=np.int64),
        linf=np.full(6, EPS, dtype=np.float32), l2=np.full(6, 1.0, dtype=np.float32),
        queries=np.full(6, 10, dtype=np.int64), seconds=2.0)
    return Evaluation(index=index, labels=labels, clean_pred=clean_pred, records=[pgd, cw, targeted][:n_records],
                      meta={"model": "lenet5", "dataset": "mnist", "seed": 0})


def assert_same_evaluation(got: Evaluation, want: Evaluation) -> None:
    for name in ("index", "labels", "clean_pred"):
        assert getattr(got, name).dtype == getattr(want, name).dtype
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert got.meta == want.meta
    assert len(got.records) == len(want.records)
    for a, b in zip(got.records, want.records):
        assert (a.attack, a.eps, a.params, a.seconds, a.norm, a.label) == (b.attack, b.eps, b.params, b.seconds,
                                                                          b.norm, b.label)
        for name in ("adv_pred", "linf", "l2", "queries"):
            assert getattr(a, name).dtype == getattr(b, name).dtype
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        if b.target is None:
            assert a.target is None
        else:
            assert a.target.dtype == b.target.dtype
            np.testing.assert_array_equal(a.target, b.target)


def fixed_clock(monkeypatch) -> None:
    """Distinct, increasing timestamps, so that 'unchanged' and 'updated' are tellable apart."""
    ticks = itertools.count()
    monkeypatch.setattr(results_store, "_now", lambda: f"2024-01-01T00:00:{next(ticks):02d}+00:00")


# -- schema and migrations -------------------------------------------------------------------------


def test_schema_created_in_wal_mode(tmp_path):
    path = tmp_path / "nested" / "folder" / "results.sqlite"
    with ResultsStore(path) as store:
        assert store.path == path and path.exists()
        assert store.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert TABLES <= tables
    finally:
        conn.close()


def test_reopening_keeps_data_and_version(tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as store:
        run_id = add_run(store)
    with ResultsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.get_run(run_id).hash == "a1b2c3d4e5f6"


def test_migration_adds_column_keeps_data_and_bumps_version(tmp_path, monkeypatch):
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as store:
        run_id = add_run(store)
        store.add_metrics(run_id, [{"epoch": 1, "train_loss": 0.5}])
    new_version = SCHEMA_VERSION + 1
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + [
        (new_version, "ALTER TABLE runs ADD COLUMN notes TEXT NOT NULL DEFAULT '';"
                      "CREATE INDEX runs_by_status ON runs (status);")])
    with ResultsStore(path) as store:
        assert store.schema_version == new_version
        assert store.get_run(run_id).name == "ce"
        assert store.metrics(run_id) == [{"epoch": 1, "train_loss": 0.5}]
        columns = [r[1] for r in store._conn.execute("PRAGMA table_info(runs)")]
        assert "notes" in columns
    # Opening again does not re-run the migration (ALTER TABLE would fail on the existing column).
    with ResultsStore(path) as store:
        assert store.schema_version == new_version


def test_failed_migration_is_rolled_back(tmp_path, monkeypatch):
    path = tmp_path / "results.sqlite"
    ResultsStore(path).close()
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + [
        (SCHEMA_VERSION + 1, "ALTER TABLE runs ADD COLUMN notes TEXT; ALTER TABLE no_such_table ADD COLUMN x;")])
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        ResultsStore(path)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:-1])
    with ResultsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert "notes" not in [r[1] for r in store._conn.execute("PRAGMA table_info(runs)")]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "results.sqlite"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.close()
    with pytest.raises(StoreError, match="upgrade robustloss") as info:
        ResultsStore(path)
    assert isinstance(info.value, RobustlossError)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable results store"):
        ResultsStore(path)


# -- transactions ----------------------------------------------------------------------------------


def test_outer_transaction_rolls_back_nested_writes(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            add_run(store, hash="aaaa0001")
            with store.transaction():
                add_run(store, hash="aaaa0002")
            raise RuntimeError("boom")
    assert store.runs() == []


def test_caught_inner_failure_undoes_only_the_inner_block(store):
    with store.transaction():
        add_run(store, hash="aaaa0001")
        with pytest.raises(RuntimeError):
            with store.transaction():
                add_run(store, hash="aaaa0002")
                raise RuntimeError("boom")
        add_run(store, hash="aaaa0003")
    assert [r.hash for r in store.runs()] == ["aaaa0001", "aaaa0003"]
    assert not store._conn.in_transaction


# -- runs and cells --------------------------------------------------------------------------------


def test_upsert_run_is_idempotent_and_never_resets_status(store, monkeypatch):
    fixed_clock(monkeypatch)
    first = store.upsert_run(hash="a1b2c3d4", experiment="table1", name="ce", config={"b": 1, "a": [1, 2]},
                             train_hash="t1", model_dir="models/t1", run_dir="runs/a1", code_revision="rev1")
    store.set_status(first, "done")
    again = store.upsert_run(hash="a1b2c3d4", experiment="table1", name="ce", config={"b": 1, "a": [1, 2]},
                             code_revision="rev2")
    assert again == first
    assert store._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    run = store.get_run(first)
    assert run.status == "done"
    assert run.code_revision == "rev2"
    assert run.updated_at > run.created_at
    assert (run.config, run.train_hash, run.model_dir, run.run_dir, run.kind) == (
        {"a": [1, 2], "b": 1}, "t1", "models/t1", "runs/a1", "model")
    store.upsert_run(hash="a1b2c3d4", experiment="table1", name="ce", config={})
    assert store.get_run(first).code_revision == "rev2"  # an empty revision does not erase the known one


def test_upsert_run_rejects_unknown_kind(store):
    with pytest.raises(StoreError, match="substitute"):
        store.upsert_run(hash="abcd", experiment="e", name="n", config={}, kind="teacher")
    assert store.upsert_run(hash="abcd", experiment="e", name="n", config={}, kind="substitute") == 1


def test_status_transitions_set_timestamps(store, monkeypatch):
    fixed_clock(monkeypatch)
    run_id = add_run(store)
    run = store.get_run(run_id)
    assert (run.status, run.started_at, run.finished_at, run.error) == ("pending", None, None, None)

    store.set_status(run_id, "training")
    started = store.get_run(run_id).started_at
    assert started is not None
    store.set_status(run_id, "evaluating")
    run = store.get_run(run_id)
    assert (run.status, run.started_at, run.finished_at) == ("evaluating", started, None)

    store.set_status(run_id, "failed", error="CUDA out of memory")
    run = store.get_run(run_id)
    assert (run.status, run.error) == ("failed", "CUDA out of memory")
    assert run.finished_at is not None and run.finished_at > started

    store.set_status(run_id, "training")  # resumed: the old end time no longer holds, the start time does
    run = store.get_run(run_id)
    assert (run.started_at, run.finished_at, run.error) == (started, None, None)
    store.set_status(run_id, "done")
    run = store.get_run(run_id)
    assert run.status == "done" and run.finished_at > run.started_at


def test_invalid_status_and_unknown_run_are_rejected(store):
    run_id = add_run(store)
    with pytest.raises(StoreError, match="valid: pending, training"):
        store.set_status(run_id, "finished")
    with pytest.raises(StoreError, match="no run with id 99"):
        store.set_status(99, "done")
    with pytest.raises(StoreError, match="unknown status"):
        store.runs(status="finished")
    assert store.get_run(run_id).status == "pending"


def test_get_run_by_id_hash_and_prefix(store):
    a = add_run(store, hash="abcd1234ffff", name="a")
    b = add_run(store, hash="abcd5678ffff", name="b")
    c = add_run(store, hash="ef012345ffff", name="c")
    assert store.get_run(a).name == "a"
    assert store.get_run(str(b)).name == "b"
    assert store.get_run("abcd5678ffff").id == b
    assert store.get_run("abcd12").id == a
    assert store.get_run("ef01").id == c
    with pytest.raises(StoreError) as info:
        store.get_run("abcd")
    assert "abcd1234ffff" in str(info.value) and "abcd5678ffff" in str(info.value)
    for missing in ("ef0", "9999", "zzzzzz", 42):  # 'ef0' is too short to count as a prefix
        with pytest.raises(StoreError, match="no run matches"):
            store.get_run(missing)


def test_runs_filters_and_experiments(store):
    a = add_run(store, hash="aaaa01", experiment="table1")
    b = add_run(store, hash="aaaa02", experiment="table2")
    c = add_run(store, hash="aaaa03", experiment="table1")
    store.set_status(c, "done")
    assert [r.id for r in store.runs()] == [a, b, c]
    assert [r.id for r in store.runs(experiment="table1")] == [a, c]
    assert [r.id for r in store.runs(status="done")] == [c]
    assert [r.id for r in store.runs(experiment="table2", status="done")] == []
    assert store.experiments() == ["table1", "table2"]


def test_link_cell_upserts_and_cells_filter_by_scale(store):
    a = add_run(store, hash="aaaa01")
    b = add_run(store, hash="aaaa02")
    store.link_cell(experiment="table1", scale="smoke", cell={"loss": "ce", "model": "lenet5"}, run_id=a)
    store.link_cell(experiment="table1", scale="smoke", cell={"model": "lenet5", "loss": "pc"}, run_id=a)
    store.link_cell(experiment="table1", scale="paper", cell={"loss": "ce", "model": "lenet5"}, run_id=a)
    # The same cell again, keys in another order: one row, now pointing at run b.
    store.link_cell(experiment="table1", scale="smoke", cell={"model": "lenet5", "loss": "ce"}, run_id=b)
    smoke = store.cells("table1", scale="smoke")
    assert [(c.cell, c.run_id) for c in smoke] == [({"loss": "ce", "model": "lenet5"}, b),
                                                  ({"loss": "pc", "model": "lenet5"}, a)]
    assert len(store.cells("table1")) == 3
    assert store.cells("table2") == []
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are enforced
        store.link_cell(experiment="table1", scale="smoke", cell={"loss": "x"}, run_id=999)


# -- training artefacts ----------------------------------------------------------------------------


def test_metrics_upsert_and_extra_keys_round_trip(store):
    run_id = add_run(store)
    store.add_metrics(run_id, [
        {"epoch": e, "phase": "ce", "lr": 0.1, "train_loss": 1.0 / e, "train_acc": 0.5, "test_acc": 0.4,
         "seconds": 2.0, "grad_norm": 3.5, "lr_groups": [0.1, 0.01]} for e in (1, 2, 3)])
    store.add_metrics(run_id, [{"epoch": 3, "phase": "pc", "train_loss": np.float32(0.25), "test_acc": None,
                                "note": "resumed"}])
    rows = store.metrics(run_id)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0] == {"epoch": 1, "phase": "ce", "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.4,
                       "seconds": 2.0, "grad_norm": 3.5, "lr_groups": [0.1, 0.01]}
    assert rows[2] == {"epoch": 3, "phase": "pc", "train_loss": 0.25, "test_acc": None, "note": "resumed"}
    assert store.metrics(add_run(store, hash="other1")) == []


def test_metrics_rows_need_an_epoch(store):
    run_id = add_run(store)
    with pytest.raises(StoreError, match="'epoch'"):
        store.add_metrics(run_id, [{"epoch": 1}, {"train_loss": 0.3}])
    assert store.metrics(run_id) == []  # nothing of the batch was written


def test_checkpoints_replace_on_re_add(store):
    run_id = add_run(store)
    store.add_checkpoint(run_id, "runs/x/epoch2.pt", 2, "22" * 32)
    store.add_checkpoint(run_id, "runs/x/last.pt", 1, "11" * 32)
    store.add_checkpoint(run_id, "runs/x/epoch2.pt", 2, "ab" * 32)
    got = store.checkpoints(run_id)
    assert [(c["path"], c["epoch"], c["sha256"]) for c in got] == [
        ("runs/x/last.pt", 1, "11" * 32), ("runs/x/epoch2.pt", 2, "ab" * 32)]
    assert all(c["created_at"].endswith("+00:00") for c in got)


# -- evaluations -----------------------------------------------------------------------------------


def test_evaluation_round_trips_exactly(store):
    run_id = add_run(store)
    assert store.load_evaluation(run_id) is None
    evaluation = make_evaluation()
    store.save_evaluation(run_id, evaluation)
    assert_same_evaluation(store.load_evaluation(run_id), evaluation)


def test_resaving_does_not_duplicate_and_rows_match_the_evaluation(store):
    run_id = add_run(store)
    evaluation = make_evaluation()
    store.save_evaluation(run_id, evaluation)
    store.save_evaluation(run_id, evaluation)
    rows = store.evaluation_rows(run_id)
    assert len(rows) == 3
    summary = evaluation.summary()[1:]
    for row, record, expected in zip(rows, evaluation.records, summary):
        assert row["accuracy"] == evaluation.accuracy(record)
        assert (row["mean_linf"], row["mean_l2"]) == (expected["mean_linf"], expected["mean_l2"])
        assert (row["name"], row["attack"], row["eps"], row["norm"], row["params"], row["n"]) == (
            record.name, record.attack, record.eps, record.norm, record.params, 6)
        assert row["objective"] == record.objective and row["seconds"] == record.seconds
    assert [r["accuracy"] for r in rows] == [pytest.approx(2 / 6), pytest.approx(1 / 6), pytest.approx(3 / 6)]
    assert store.evaluation_rows(experiment="table1") == rows
    assert store.evaluation_rows(experiment="other") == []


def test_resaving_a_grown_evaluation_keeps_earlier_records_in_order(store):
    run_id = add_run(store)
    store.save_evaluation(run_id, make_evaluation(n_records=1))
    full = make_evaluation()
    full.records[0].seconds = 9.0  # the re-run record replaces the stored one
    store.save_evaluation(run_id, full)
    assert_same_evaluation(store.load_evaluation(run_id), full)


def test_evaluating_other_samples_drops_stale_records(store):
    run_id = add_run(store)
    store.save_evaluation(run_id, make_evaluation())
    other = make_evaluation(n_records=1, index_start=100)
    store.save_evaluation(run_id, other)
    assert_same_evaluation(store.load_evaluation(run_id), other)


def test_diagnostics_are_stored_and_replaced(store):
    run_id = add_run(store)
    evaluation = make_evaluation()
    first = [Diagnostic(1, "iterative attacks at least as strong as FGSM", "pass", "", {"compared": 2}),
             Diagnostic(3, "monotone in eps", "warn", "pgd rises", {"gap": np.float64(0.05)})]
    store.save_evaluation(run_id, evaluation, diagnostics=first)
    assert store.diagnostics(run_id) == [
        {"number": 1, "check": "iterative attacks at least as strong as FGSM", "status": "pass", "detail": "",
         "numbers": {"compared": 2}},
        {"number": 3, "check": "monotone in eps", "status": "warn", "detail": "pgd rises", "numbers": {"gap": 0.05}}]
    store.save_evaluation(run_id, evaluation)  # no diagnostics given: the stored ones stay
    assert len(store.diagnostics(run_id)) == 2
    store.save_evaluation(run_id, evaluation, diagnostics=[Diagnostic(4, "huge eps", "n/a", "no record")])
    assert store.diagnostics(run_id) == [
        {"number": 4, "check": "huge eps", "status": "n/a", "detail": "no record", "numbers": {}}]


def test_save_evaluation_is_one_transaction(store):
    run_id = add_run(store)
    with pytest.raises(AttributeError):
        store.save_evaluation(run_id, make_evaluation(), diagnostics=["not a Diagnostic"])
    assert store.load_evaluation(run_id) is None
    assert store.evaluation_rows(run_id) == []


# -- export ----------------------------------------------------------------------------------------


def export_fixture(store: ResultsStore) -> tuple[int, int, Evaluation]:
    evaluated = add_run(store, hash="aaaa01", name="ce")
    pending = add_run(store, hash="aaaa02", name="pc")
    other = add_run(store, hash="aaaa03", experiment="table2", name="mmc")
    evaluation = make_evaluation()
    store.save_evaluation(evaluated, evaluation)
    store.save_evaluation(other, make_evaluation(n_records=1))
    store.set_status(evaluated, "done")
    # Two cells share the evaluated run; 'name' is an axis that collides with a fixed column.
    store.link_cell(experiment="table1", scale="smoke", cell={"loss": "ce", "name": "x"}, run_id=evaluated)
    store.link_cell(experiment="table1", scale="smoke", cell={"loss": "pc", "name": "x"}, run_id=pending)
    store.link_cell(experiment="table1", scale="paper", cell={"loss": "ce", "name": "x"}, run_id=evaluated)
    store.link_cell(experiment="table2", scale="smoke", cell={"loss": "mmc"}, run_id=other)
    return evaluated, pending, evaluation


def test_export_csv(store, tmp_path):
    _, _, evaluation = export_fixture(store)
    path = store.export(tmp_path / "out" / "table1.csv", experiment="table1")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9  # (1 clean + 3 records) x 2 cells of the evaluated run + 1 clean row of the pending one
    assert list(rows[0])[:4] == ["experiment", "scale", "loss", "cell.name"]
    assert {r["experiment"] for r in rows} == {"table1"}
    pending = [r for r in rows if r["loss"] == "pc"]
    assert len(pending) == 1 and pending[0]["run_status"] == "pending" and pending[0]["accuracy"] == ""
    cw = [r for r in rows if r["name"] == "CW-L2" and r["scale"] == "smoke"]
    assert len(cw) == 1
    assert cw[0]["eps"] == "" and cw[0]["run_hash"] == "aaaa01" and cw[0]["run_status"] == "done"
    assert float(cw[0]["accuracy"]) == evaluation.accuracy(evaluation.records[1])
    clean = [r for r in rows if r["name"] == "clean" and r["loss"] == "ce" and r["scale"] == "paper"]
    assert float(clean[0]["accuracy"]) == evaluation.clean_accuracy and clean[0]["n"] == "6"
    assert not list(path.parent.glob("*.tmp"))


def test_export_json_all_experiments(store, tmp_path):
    _, _, evaluation = export_fixture(store)
    path = store.export(tmp_path / "all.json", fmt="json")
    rows = json.loads(path.read_text())
    assert len(rows) == 9 + 2
    pgd = [r for r in rows if r["name"] == "pgd" and r["scale"] == "paper"]
    assert len(pgd) == 1
    assert pgd[0]["cell"] == {"loss": "ce", "name": "x"}
    assert pgd[0]["eps"] == EPS and pgd[0]["objective"] == "ce" and pgd[0]["n"] == 6
    assert pgd[0]["accuracy"] == evaluation.accuracy(evaluation.records[0])
    assert pgd[0]["mean_linf"] == evaluation.summary()[1]["mean_linf"]
    assert [r["name"] for r in rows if r["experiment"] == "table2"] == ["clean", "pgd"]


def test_export_rejects_unknown_format(store, tmp_path):
    with pytest.raises(StoreError, match="valid: csv, json"):
        store.export(tmp_path / "x.xml", fmt="xml")
    assert not (tmp_path / "x.xml").exists()


# -- concurrency -----------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from robustloss.experiments.store import ResultsStore

    path, writer, start, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    time.sleep(max(0.0, start - time.time()))  # all writers open the fresh file at the same moment
    with ResultsStore(path) as store:
        for i in range(count):
            with store.transaction():
                run_id = store.upsert_run(hash=f"w{writer}-{i:04d}", experiment=f"exp{writer}", name=f"run{i}",
                                          config={"writer": writer, "i": i})
                store.add_metrics(run_id, [{"epoch": 1, "train_loss": float(i), "writer": writer}])
            time.sleep(0.002)  # let the other writers in between transactions, so the lock changes hands often
""")


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "shared" / "results.sqlite"
    writers, count = 3, 200
    start = time.time() + 1.5  # time for the interpreters to start, so the writers really overlap
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(start), str(count)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(writers)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err

    with ResultsStore(path) as store:
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.schema_version == SCHEMA_VERSION
        runs = store.runs()
        assert sorted(r.hash for r in runs) == sorted(f"w{w}-{i:04d}" for w in range(writers) for i in range(count))
        for run in runs:
            writer = int(run.hash[1])
            assert run.experiment == f"exp{writer}" and run.config == {"writer": writer, "i": int(run.hash[3:])}
            assert store.metrics(run.id) == [{"epoch": 1, "train_loss": float(run.config["i"]), "writer": writer}]
        assert store._conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == writers * count


def test_version_1_file_migrates_to_the_experiments_table(tmp_path, monkeypatch):
    # A store written before version 2 existed: its runs survive, and experiment documents work after.
    path = tmp_path / "results.sqlite"
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    with ResultsStore(path) as store:
        assert store.schema_version == 1
        run_id = add_run(store)
    monkeypatch.undo()
    with ResultsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 2
        assert store.get_run(run_id).hash == "a1b2c3d4e5f6"
        store.save_experiment("pc-table1", "smoke", {"file": {"title": "T1"}, "published": [{"value": 99.2}]})
        store.save_experiment("pc-table1", "demo", {"file": {"title": "T1 demo"}})
        store.save_experiment("pc-table1", "smoke", {"file": {"title": "T1 again"}})  # replaced, now the latest
        assert store.experiment_scales("pc-table1") == ["demo", "smoke"]
        assert store.experiment_document("pc-table1", "smoke")["file"]["title"] == "T1 again"
        assert "pc-table1" in store.experiments()
        with pytest.raises(StoreError, match="no experiment 'pc-table1' at scale 'paper'"):
            store.experiment_document("pc-table1", "paper")


def test_version_2_file_migrates_to_the_analyses_table(tmp_path, monkeypatch):
    path = tmp_path / "results.sqlite"
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
    with ResultsStore(path) as store:
        assert store.schema_version == 2
        store.save_experiment("pc-demo", "demo", {"file": {"title": "demo"}})
    monkeypatch.undo()
    with ResultsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 3
        assert store.experiment_document("pc-demo", "demo") == {"file": {"title": "demo"}}
        assert store.analyses() == []


def test_analyses_are_replaced_when_recomputed_and_found_by_experiment_or_models(store):
    first = store.save_analysis(name="gap", models={"CE": "aaaa", "PC-LC": "bbbb"}, params={"n_test": None},
                                files=["reports/analysis/gap.png"], summary=[{"run": "CE", "mean": 0.9}],
                                experiment="pc-demo", scale="demo")
    again = store.save_analysis(name="gap", models={"PC-LC": "bbbb", "CE": "aaaa"}, params={"n_test": None},
                                files=["reports/analysis/gap.png"], summary=[{"run": "CE", "mean": 0.8}],
                                experiment="pc-demo", scale="demo")
    assert again == first  # same analysis of the same models: replaced, not duplicated
    by_hand = store.save_analysis(name="rank", models={"CE": "aaaa"}, params={"attack": "fgsm"},
                                  files=["/tmp/rank.png"], summary=[])
    other = store.save_analysis(name="gap", models={"X": "cccc"}, params={}, files=[], summary=[])
    assert [a.summary for a in store.analyses(experiment="pc-demo")] == [[{"run": "CE", "mean": 0.8}]]
    assert store.analyses(experiment="pc-demo", scale="smoke") == []
    found = store.analyses(experiment="pc-demo", scale="demo", model_hashes={"aaaa", "bbbb"})
    assert [a.id for a in found] == [first, by_hand]
    assert {a.id for a in store.analyses()} == {first, by_hand, other}
    assert found[0].models == {"CE": "aaaa", "PC-LC": "bbbb"} and found[1].params == {"attack": "fgsm"}
