"""A damaged results store gets one clean, actionable refusal from every command that reads it.

The store is damaged three ways: pages overwritten behind an intact header (SQLite opens the file and
fails only when a query reaches the bad pages), truncated to half its size, and replaced by random
bytes. ``ls``, ``report`` and ``run`` then run as a user runs them, in a subprocess: each must exit 1
with a single ``robustloss: error:`` line that names the file, ``PRAGMA integrity_check`` and the way
out, print no traceback, and leave the damaged file exactly as it was.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from robustloss.evaluate.records import AttackRecord, Evaluation
from robustloss.experiments.store import ResultsStore, StoreError

DAMAGES = ["overwritten-pages", "truncated", "garbage"]
EXPERIMENT = textwrap.dedent("""\
    name: damaged
    train: {dataset: mnist-5k, recipe: [{loss: ce, epochs: 1}], max_train_samples: 100, batch_size: 50}
    evaluate: {n_test: 10, diagnostics: false, attacks: [{attack: fgsm, eps: [0.1]}]}
    grid: {method: {CE: {}}}
""")


def fill(path: Path) -> None:
    """A store with enough rows that its tables span several pages, and one evaluated run."""
    evaluation = Evaluation(
        index=np.arange(4), labels=np.array([0, 1, 2, 3]), clean_pred=np.array([0, 1, 2, 0]),
        records=[AttackRecord(attack="fgsm", eps=0.1, params={}, adv_pred=np.array([0, 2, 2, 1]),
                              linf=np.full(4, 0.1, dtype=np.float32), l2=np.ones(4, dtype=np.float32),
                              queries=np.ones(4, dtype=np.int64), seconds=1.0)],
        meta={})
    with ResultsStore(path) as store:
        store.save_experiment("damaged", "base", {"file": {"name": "damaged"}, "scale": "base"})
        for i in range(150):
            run_id = store.upsert_run(hash=f"{i:04d}feedbeef", experiment="damaged", name=f"cell {i}",
                                      config={"padding": "x" * 300, "i": i})
            store.link_cell(experiment="damaged", scale="base", cell={"method": f"m{i}"}, run_id=run_id)
        store.save_evaluation(1, evaluation)
        store.set_status(1, "done")


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "overwritten-pages":
        # Overwrite the root pages of the tables the commands read first; page 1 (the header and the
        # schema) and the meta table stay intact, so the file opens and fails only when queried.
        with sqlite3.connect(path) as conn:
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            roots = [r[0] for r in conn.execute(
                "SELECT rootpage FROM sqlite_master WHERE name IN ('runs', 'experiments', 'cells')")]
        conn.close()
        for page in roots:  # pages are numbered from 1
            data[(page - 1) * size: page * size] = b"\x5a" * size
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("healthy") / "results.sqlite"
    fill(path)
    return path


def robustloss(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustloss", *args], check=False, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_overwritten_pages_open_and_fail_only_at_query_time(healthy, tmp_path):
    """The case a check at open time cannot catch: the header is valid, the damage is further in."""
    path = tmp_path / "results.sqlite"
    path.write_bytes(healthy.read_bytes())
    damage(path, "overwritten-pages")
    with ResultsStore(path) as store:  # opens fine
        with pytest.raises(StoreError, match="PRAGMA integrity_check"):
            store.runs()
        with pytest.raises(StoreError, match="is damaged"):
            store.check_integrity()


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("command", [["ls"], ["report"], ["run", "experiment.yaml", "--device", "cpu",
                                                          "--no-progress"]], ids=["ls", "report", "run"])
def test_damaged_store_gets_a_clean_refusal(healthy, tmp_path, how, command):
    root = tmp_path / "results"
    root.mkdir()
    path = root / "results.sqlite"
    path.write_bytes(healthy.read_bytes())
    damage(path, how)
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT)
    before = digest(path)

    result = robustloss(tmp_path, *command, "--root", "results")

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("robustloss: error:")]
    assert str(Path("results") / "results.sqlite") in line, line
    assert "PRAGMA integrity_check" in line and "backup" in line and "rerun" in line, line
    assert digest(path) == before, "the damaged store was modified"
    assert not (root / "models").exists() and not (root / "runs").exists(), "run started work on a damaged store"
