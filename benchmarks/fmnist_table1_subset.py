"""PC Table 1's evaluation of one FMNIST model on a fixed 2,000-image subset, before and after the
active set: the same call with every attack computing on its whole batch (``active_set = False``, the
loop before) and with fooled samples leaving the batch (the default), in one run.

The evaluation is the table's own (``configs/pc_table1.yaml``, paper scale, FMNIST section): clean pass,
FGSM/BIM/PGD/MIM at eps 0.1/0.2/0.3, C&W-100, the sanity checks and the diagnostics' probes, on the
first 2,000 test images. The per-sample results of the two runs must be identical; the script counts
the samples whose verdict differs (floating-point differences between batch sizes could flip a
borderline one) and prints each row's time before and after.

    .venv/bin/python benchmarks/fmnist_table1_subset.py [--model runs/fmnist/models/<CE model>] [--n 2000]

The model is a run folder or model.pt of the table's CE model (``robustloss run configs/pc_table1.yaml
--scale paper --set 'grid.dataset={"FMNIST": {"train.dataset": "fashion-mnist"}}'`` trains it). Data:
Debian's ``dataset-fashion-mnist``; without it the script says so and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from robustloss.attacks.base import Attack
from robustloss.data import load_dataset
from robustloss.errors import DatasetNotFoundError
from robustloss.evaluate.run import run_evaluation
from robustloss.experiments.schema import load_experiment
from robustloss.models.saved import load_model

CONFIG = Path(__file__).resolve().parents[1] / "src" / "robustloss" / "configs" / "pc_table1.yaml"
FMNIST = 'grid.dataset={"FMNIST": {"train.dataset": "fashion-mnist"}}'


def table1_config(n: int):
    experiment = load_experiment(CONFIG, scale="paper", overrides=[FMNIST])
    return dataclasses.replace(experiment.cells[0].evaluate, n_test=n)


def timed_evaluation(model, data, config, active_set: bool):
    Attack.active_set = active_set  # the class default every attack reads
    started = time.perf_counter()
    evaluation = run_evaluation(model, data.test, config, device="cpu", progress=False, log=lambda _: None)
    return evaluation, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="run folder or model.pt of the CE model")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    try:
        data = load_dataset("fashion-mnist")
    except DatasetNotFoundError as err:
        print(f"skipped: {err}")
        return 0
    path = Path(args.model) if args.model else None
    if path is None or not path.exists():
        print("skipped: pass --model with the FMNIST CE model of PC Table 1 (see the module docstring)")
        return 0
    model = load_model(path / "model.pt" if path.is_dir() else path)[0]
    config = table1_config(args.n)
    # warm-up (allocator, kernels, lazy imports) so that neither timed run pays for it
    timed_evaluation(model, data, dataclasses.replace(config, n_test=20), active_set=True)
    before, t_before = timed_evaluation(model, data, config, active_set=False)
    after, t_after = timed_evaluation(model, data, config, active_set=True)
    Attack.active_set = True
    print(f"PC Table 1, FMNIST, first {args.n} test images: {len(after.records)} (attack, eps) rows incl. probes")
    print(f"{'row':<28}{'acc %':>7}{'before s':>10}{'after s':>9}{'after/before':>13}{'differ':>7}")
    differ_total = 0
    for b, a in zip(before.records, after.records):
        differ = int(np.sum(b.adv_pred != a.adv_pred))
        differ_total += differ
        acc = 100 * after.accuracy(a)
        eps = "-" if a.eps is None else f"{a.eps:g}"
        print(f"{(a.label or a.attack) + ' ' + eps:<28}{acc:7.1f}{b.seconds:10.1f}{a.seconds:9.1f}"
              f"{a.seconds / max(b.seconds, 1e-9):13.3f}{differ:7d}")
    print(f"whole evaluation: before {t_before:.1f} s, after {t_after:.1f} s, after/before {t_after / t_before:.3f}; "
          f"samples whose verdict differs: {differ_total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
