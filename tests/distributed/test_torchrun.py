"""Two processes on CPU with the gloo backend, launched by torchrun as a user would:
evaluation covers every sample exactly once and equals the single-process result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robustloss.evaluate.records import Evaluation
from robustloss.train import Phase, TrainConfig, train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "robustloss"]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def small_run(mnist5k, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp") / "lenet"
    train(TrainConfig(recipe=[Phase("ce", 2)], max_train_samples=1000, seed=0), folder, data=mnist5k,
          progress=False, log=lambda _: None, device="cpu")
    return folder


def test_torchrun_evaluation_shards_batches_and_matches_one_process(small_run, tmp_path):
    args = ["eval", str(small_run), "--attacks", "fgsm,pgd", "--eps", "0.1,0.2", "--steps", "5",
            "--step-size", "0.05", "--n-test", "230", "--batch-size", "40", "--device", "cpu", "--no-progress"]
    two = run([*TORCHRUN, *args, "--out", str(tmp_path / "two")], tmp_path)
    one = run([sys.executable, "-m", "robustloss", *args, "--out", str(tmp_path / "one")], tmp_path)
    a = Evaluation.load(tmp_path / "two" / "records.npz")
    b = Evaluation.load(tmp_path / "one" / "records.npz")
    assert len(a.records) == len(b.records) == 4
    for ra, rb in zip(a.records, b.records):
        assert np.array_equal(ra.adv_pred, rb.adv_pred)
        np.testing.assert_allclose(ra.linf, rb.linf, equal_nan=True)
    # Each rank attacked its own batches, dealt round-robin: the clean-correct samples make
    # ceil(n / 40) batches, the first rank taking the odd one out.
    batches = -(-int(b.clean_correct.sum()) // 40)
    assert batches >= 2
    assert a.meta["batches_per_rank"] == [[(batches + 1) // 2, batches // 2]] * 4 and "batches_per_rank" not in b.meta
    assert len(list((tmp_path / "two" / "chunks").rglob("*.npz"))) == len(list((tmp_path / "one" / "chunks").rglob("*.npz")))
    assert two.stdout.count("Wrote") == 1  # one copy of the output: rank 0's
