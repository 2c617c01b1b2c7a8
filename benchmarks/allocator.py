"""The allocator setting of ``robustloss.launch`` measured: the same job with glibc's default malloc
thresholds and with the ones the ``robustloss`` command sets, as ratios taken in one run.

The job is a real one: PGD (40 steps of 0.01, eps 0.3, no early stop, so the work is fixed) on the
first N test digits of mnist-5k with a LeNet-5 trained for 2 epochs, then a 2-epoch training run.
Each setting runs in its own child process (the thresholds are read at process start), alternating,
``--rounds`` times; the report gives the medians of wall time, user and system CPU seconds and minor
page faults, and after/before ratios.

    .venv/bin/python benchmarks/allocator.py [--n 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from robustloss.launch import ALLOCATOR_SETTINGS

CHILD = r"""
import resource, sys, time, torch
from robustloss.attacks import create_attack
from robustloss.data import load_dataset
from robustloss.train import Phase, TrainConfig, train
n, folder = int(sys.argv[1]), sys.argv[2]
data = load_dataset("mnist-5k")
def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime, r.ru_minflt
t0 = usage()
model = train(TrainConfig(recipe=[Phase("ce", 2)], seed=0), folder, data=data, progress=False,
              log=lambda _: None, device="cpu").model.eval()
t1 = usage()
x, y = data.test.batch(slice(0, n))
pgd = create_attack("pgd", eps=0.3, steps=40, step_size=0.01, early_stop=False)
result = pgd(model, x, y, generator=torch.Generator().manual_seed(0))
t2 = usage()
print(*(b - a for a, b in zip(t0, t1)), *(b - a for a, b in zip(t1, t2)))
print((result.pred == y).float().mean().item())
"""


def run_child(n: int, tuned: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_SETTINGS}
    if tuned:
        env |= ALLOCATOR_SETTINGS
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), folder], env=env, capture_output=True,
                             text=True, check=True).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    phases = [float(v) for v in out.splitlines()[-2].split()]
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt, "train wall": phases[0], "train cpu": phases[1],
            "pgd wall": phases[3], "pgd cpu": phases[4], "robust": float(out.split()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test digits attacked (default 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for name in runs:  # alternating, so a change in the machine's load hits both alike
            runs[name].append(run_child(args.n, tuned=name == "tuned"))
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    assert medians["default"]["robust"] == medians["tuned"]["robust"], "the allocator must not change results"
    print(f"PGD-40 on {args.n} digits + 2 training epochs, medians of {args.rounds} rounds")
    shown = ("wall", "user", "sys", "faults", "train wall", "train cpu", "pgd wall", "pgd cpu")
    print(f"{'':10}" + "".join(f"{k:>12}" for k in shown) + "   (seconds; faults: minor page faults)")
    for name, m in medians.items():
        print(f"{name:10}" + "".join(f"{m[k]:12,.1f}" for k in shown))
    d, t = medians["default"], medians["tuned"]
    print("tuned / default: " + ", ".join(f"{k} {t[k] / d[k]:.2f}x" for k in shown))
    print(json.dumps({"medians": medians}))


if __name__ == "__main__":
    main()
