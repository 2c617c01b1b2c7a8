"""Two `robustloss eval` processes into one output folder do not interleave: the second says so and
waits for the first, then finishes (reusing its cached chunks) with the same records."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time

import numpy as np

from robustloss.cli import main
from robustloss.evaluate.records import Evaluation

EVAL = ["--attacks", "fgsm", "--eps", "0.1", "--n-test", "40", "--device", "cpu", "--no-progress"]


def test_a_second_eval_waits_for_the_first(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist-5k", "--loss", "ce", "--epochs", "1", "--max-train-samples", "200",
                 "--out", str(run), "--device", "cpu", "--no-progress"]) == 0
    out = run / "eval"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # the first eval, still running
        fcntl.flock(held, fcntl.LOCK_EX)
        second = subprocess.Popen([sys.executable, "-m", "robustloss", "eval", str(run), *EVAL],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        waiting = second.stdout.readline()  # the first line it prints, once it has met the lock
        assert waiting.startswith(f"another robustloss eval is writing to {out}; waiting"), waiting
        time.sleep(2)
        assert second.poll() is None and not (out / "records.npz").exists()  # it really waits
        fcntl.flock(held, fcntl.LOCK_UN)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    assert "fgsm eps=0.1" in stdout
    first = Evaluation.load(out / "records.npz")
    assert main(["eval", str(run), *EVAL, "--no-cache"]) == 0  # recomputed from scratch: the same records
    again = Evaluation.load(out / "records.npz")
    assert np.array_equal(again.records[0].adv_pred, first.records[0].adv_pred)
