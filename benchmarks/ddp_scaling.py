"""Training throughput under torchrun/DDP with N processes against one process, in one run.

Both train the same recipe with `robustloss train` (the user's command) on the same data,
the DDP job launched by `torchrun --standalone --nproc-per-node N`. The time of each epoch is
read from the run's own metrics.csv (so process start-up and data loading are not counted);
the first epoch is a warm-up and left out. Ratio > 1: DDP is faster.

On a CPU-only machine the processes share the cores: each DDP process gets cores / N threads
and the single process all of them, so the ratio measures DDP's overhead more than its gain.
On a node with N GPUs each process takes its own GPU.

    .venv/bin/python benchmarks/ddp_scaling.py [--nproc 2] [--model lenet5] [--epochs 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def epoch_seconds(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def train(command: list[str], out: Path, threads: int) -> list[float]:
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    subprocess.run([*command, "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
    return epoch_seconds(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--adversarial", default=None, help="e.g. pgd: time adversarial training instead")
    args = parser.parse_args()

    recipe = ["train", "--dataset", args.dataset, "--model", args.model, "--loss", "ce", "--epochs", str(args.epochs),
              "--batch-size", str(args.batch_size), "--device", args.device, "--no-progress"]
    if args.adversarial:
        recipe += ["--adversarial", args.adversarial, "--adv-eps", "0.1,0.3", "--adv-objective", "ce"]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        single = train([sys.executable, "-m", "robustloss", *recipe], Path(tmp) / "one", threads=cores)
        job = train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                     str(args.nproc), "-m", "robustloss", *recipe], Path(tmp) / "ddp",
                    threads=max(1, cores // args.nproc))
    from robustloss.data import load_dataset

    n = len(load_dataset(args.dataset).train)
    one, ddp = statistics.median(single[1:] or single), statistics.median(job[1:] or job)
    print(f"{args.model} on {args.dataset} ({n} images/epoch, batch {args.batch_size}, device {args.device}, "
          f"{cores} cores{', ' + args.adversarial + ' AT' if args.adversarial else ''}):")
    print(f"  1 process:            {one:7.2f} s/epoch  {n / one:9.0f} images/s")
    print(f"  DDP, {args.nproc} processes:     {ddp:7.2f} s/epoch  {n / ddp:9.0f} images/s")
    print(f"  ratio DDP / 1 process: {one / ddp:.2f}x throughput (median of epochs 2..{args.epochs})")


if __name__ == "__main__":
    main()
