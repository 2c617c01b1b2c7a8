"""Attack speed against the raw forward+backward loop and against torchattacks, in one run.

For each model and batch size, every iterative attack is timed beside a hand-written loop that
does the same number of forward+backward passes (CE gradient, sign step, projection), and our
PGD beside torchattacks' PGD with identical settings. Our attacks end with one forward pass that
classifies the adversarial examples (an evaluation needs it), so the loop and torchattacks are
also timed with that pass added ("raw+judge"). Timings are interleaved over rounds and
the median is reported; ratios > 1 mean ours is slower.

    .venv/bin/python benchmarks/attack_speed.py [--models lenet5,vgg13] [--batches 250,1000] [--steps 10]
    .venv/bin/python benchmarks/attack_speed.py --less-work    # the active set on real models (less_work.py)

torchattacks is optional (``pip install --no-deps torchattacks==3.5.1``, which leaves torch alone).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustloss.attacks import create_attack
from robustloss.device import resolve_device
from robustloss.models import create_model

SHAPES = {"lenet5": (1, 28), "cnn3": (1, 28), "vgg13": (3, 32), "resnet20": (3, 32)}


def raw_loop(model, x, y, eps, step, steps):
    """The speed limit: `steps` forward+backward passes with nothing else."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def judged(model, attack_fn):
    """An attack followed by the forward pass that classifies its output: what an evaluation needs."""
    def run():
        x_adv = attack_fn()
        with torch.no_grad():
            return model(x_adv).argmax(1)
    return run


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet5,vgg13")
    parser.add_argument("--batches", default="250,1000")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--less-work", action="store_true",
                        help="only the less-work table: active set vs full batch vs torchattacks on real models")
    parser.add_argument("--models-dir", default="runs/bench/models", help="where --less-work keeps its two models")
    args = parser.parse_args()
    if args.less_work:
        from less_work import less_work_table  # a sibling script: benchmarks/ is on sys.path when run

        less_work_table(args.rounds, Path(args.models_dir))
        return
    device = resolve_device(args.device)
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    eps, steps = 0.1, args.steps
    step = 2.5 * eps / steps
    print(f"device {device}, torch {torch.__version__}, {steps} steps, median of {args.rounds} interleaved rounds"
          + ("" if torchattacks else "; torchattacks not installed"))
    print("raw = the bare loop; raw+judge and torchattacks include the forward pass that classifies the result,")
    print("which our attacks do themselves (they return the adversarial class, not just images)")
    print(f"{'model':<8} {'batch':>5} {'attack':<8} {'ours s':>7} {'raw s':>7} {'ours/raw':>8} {'ours/(raw+judge)':>16} "
          f"{'ours/torchattacks':>17}")
    for name in args.models.split(","):
        channels, size = SHAPES[name]
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_channels=channels, input_size=size).to(device).eval()
        for batch in (int(b) for b in args.batches.split(",")):
            g = torch.Generator().manual_seed(0)
            x = torch.rand(batch, channels, size, size, generator=g).to(device)
            y = torch.randint(0, 10, (batch,), generator=g).to(device)
            # early_stop=False: every method does all its steps (with early stopping ours would quit as soon
            # as every sample is fooled, which on an untrained model is almost at once: an unfair advantage)
            ours = {
                "bim": create_attack("bim", eps=eps, steps=steps, step_size=step, early_stop=False),
                "pgd": create_attack("pgd", eps=eps, steps=steps, step_size=step, early_stop=False),
                "mim": create_attack("mim", eps=eps, steps=steps, step_size=step, early_stop=False),
                "pgd-l2": create_attack("pgd-l2", eps=2.0, steps=steps, early_stop=False),
            }
            reference = torchattacks.PGD(model, eps=eps, alpha=step, steps=steps, random_start=True) if torchattacks else None
            times: dict[str, list[float]] = {k: [] for k in [*ours, "raw", "raw+judge", "torchattacks"]}
            runners = {k: (lambda a=a, r=0: a(model, x, y, generator=torch.Generator().manual_seed(r)))
                       for k, a in ours.items()}
            runners["raw"] = lambda: raw_loop(model, x, y, eps, step, steps)
            runners["raw+judge"] = judged(model, lambda: raw_loop(model, x, y, eps, step, steps))
            if reference is not None:
                runners["torchattacks"] = judged(model, lambda: reference(x, y))
            order = random.Random(0)
            for round_index in range(args.rounds + 1):  # round 0 warms up
                names = list(runners)
                order.shuffle(names)  # no method always runs first or right after another
                sample = {k: timed(runners[k], device) for k in names}
                if round_index:
                    for k, v in sample.items():
                        times[k].append(v)
            raw, judged_raw = statistics.median(times["raw"]), statistics.median(times["raw+judge"])
            ta = statistics.median(times["torchattacks"]) if times["torchattacks"] else None
            for attack in ours:
                t = statistics.median(times[attack])
                vs_ta = f"{t / ta:17.3f}" if ta and attack == "pgd" else f"{'':>17}"
                print(f"{name:<8} {batch:>5} {attack:<8} {t:7.3f} {raw:7.3f} {t / raw:8.3f} {t / judged_raw:16.3f} {vs_ta}")


if __name__ == "__main__":
    main()
