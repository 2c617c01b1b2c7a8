"""Two processes on CPU with the gloo backend, launched by torchrun as a user would:
evaluation covers every sample exactly once and equals the single-process result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest

from robustloss.evaluate.records import Evaluation
from robustloss.train import OptimizerConfig, Phase, TrainConfig, train

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
    run([sys.executable, "-m", "robustloss", *args, "--out", str(tmp_path / "one")], tmp_path)
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


# SGD: Adam divides by the root of the squared gradients, which turns floating-point noise in a
# near-zero gradient into a full step of either sign; SGD keeps a difference as small as it starts.
TRAIN = ["train", "--dataset", "mnist-5k", "--loss", "ce", "--epochs", "2", "--max-train-samples", "1000",
         "--batch-size", "100", "--optimizer", "sgd", "--lr", "0.05", "--device", "cpu", "--no-progress"]


def weights(folder: Path) -> dict:
    from robustloss.checkpoint import safe_load

    return safe_load(folder / "model.pt")["state_dict"]


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol), (name, float((a[name] - b[name]).abs().max()))


def test_ddp_training_matches_one_process_and_resumes(tmp_path, mnist5k):
    run([*TORCHRUN, *TRAIN, "--out", str(tmp_path / "two")], tmp_path)
    run([sys.executable, "-m", "robustloss", *TRAIN, "--out", str(tmp_path / "one")], tmp_path)
    # The same global batches, each rank's loss weighted by its share: the same training up to
    # floating-point order (LeNet-5 has no batch norm, whose statistics would be per rank).
    assert_close(weights(tmp_path / "two"), weights(tmp_path / "one"), atol=1e-4)
    metrics = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3  # one header and one row per epoch, written once (by rank 0)

    # Resume under torchrun from a single-process checkpoint taken after epoch 1.
    class Stop(Exception):
        pass

    def stop_after_first(row, checkpoint):
        raise Stop

    config = TrainConfig(dataset="mnist-5k", recipe=[Phase("ce", 2)], max_train_samples=1000, batch_size=100,
                         optimizer=OptimizerConfig(name="sgd", lr=0.05))
    with pytest.raises(Stop):
        train(config, tmp_path / "resumed", data=mnist5k, progress=False, log=lambda _: None, device="cpu",
              on_epoch=stop_after_first)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    run([*TORCHRUN, *TRAIN, "--out", str(tmp_path / "resumed"), "--resume"], tmp_path)
    assert_close(weights(tmp_path / "resumed"), weights(tmp_path / "one"), atol=1e-4)


def test_ddp_adversarial_training_runs_end_to_end(tmp_path):
    result = run([*TORCHRUN, *TRAIN, "--adversarial", "pgd", "--adv-eps", "0.1,0.3", "--adv-steps", "2",
                  "--adv-objective", "ce", "--out", str(tmp_path / "at")], tmp_path)
    rows = (tmp_path / "at" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert [r.split(",")[header.index("adv_fraction")] for r in rows[1:]] == ["0.5", "0.5"]
    assert "final (epoch 2" in result.stdout


EXPERIMENT = """\
name: ddp-run
train:
  dataset: mnist-5k
  model: lenet5
  recipe: [{loss: ce, epochs: 2}]
  max_train_samples: 1000
  batch_size: 50
  optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
evaluate:
  n_test: 150
  batch_size: 20
  diagnostics: false
  attacks:
    - {attack: fgsm, eps: [0.1], label: FGSM}
    - {attack: pgd, eps: [0.1], params: {steps: 4, step_size: 0.03}, label: PGD}
grid:
  method:
    CE: {}
    PC-LC: {train.recipe: [{loss: ce, epochs: 1}, {loss: pc, epochs: 1}]}
analyses:
  - {name: gap, n_test: 50}
"""


def test_torchrun_experiment_writes_every_record_once(tmp_path):
    from robustloss.experiments.store import ResultsStore

    config = tmp_path / "ddp.yaml"
    config.write_text(EXPERIMENT)
    run([*TORCHRUN, "run", str(config), "--root", str(tmp_path / "two"), "--device", "cpu", "--no-progress"], tmp_path)
    run([sys.executable, "-m", "robustloss", "run", str(config), "--root", str(tmp_path / "one"), "--device", "cpu",
         "--no-progress"], tmp_path)
    with ResultsStore(tmp_path / "two" / "results.sqlite") as two, ResultsStore(tmp_path / "one" / "results.sqlite") as one:
        rows_two, rows_one = two.evaluation_rows(), one.evaluation_rows()
        assert len(rows_two) == len(rows_one) == 4  # 2 models x 2 attacks, each recorded exactly once
        key = lambda r: (r["name"], r["eps"])  # noqa: E731
        # The same models (SGD, no adversarial draws) and the same batches: the same results.
        for a, b in zip(sorted(rows_two, key=key), sorted(rows_one, key=key)):
            assert a["n"] == b["n"] and abs(a["accuracy"] - b["accuracy"]) <= 1 / a["n"] + 1e-9
        assert len(two.analyses()) == 1 and len(two.runs(status="done")) == 2
        for run_row in two.runs():
            assert len(two.metrics(run_row.id)) == len(one.metrics(one.get_run(run_row.hash).id))
