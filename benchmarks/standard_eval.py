"""``standard_evaluation`` against torchattacks' AutoAttack: time and strength in one run.

Both run AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries; each attack
only on the samples still standing) on the same model, images and budget. Ours runs without its
diagnostics probes (``diagnostics=False``) so that both do the same work; a second timing with the
probes shows what the diagnostics cost.

Strength is compared per sample: b = samples only ours broke, c = samples only theirs broke. Both
ensembles are randomised (random starts, Square's random search), so b and c are both noise when the
attacks are equally strong; the exact two-sided sign test on (b, c) says whether the difference is
more than that. Ours is "at least as strong" when its robust accuracy is not above theirs by more
than that noise (c not significantly larger than b).

    .venv/bin/python benchmarks/standard_eval.py [--n 500] [--eps 0.1] [--norm linf] [--epochs 3]

The model is a LeNet-5 trained with CE on the embedded MNIST digits (``--epochs``, seed 0, about 10 s).
torchattacks is optional (``pip install --no-deps torchattacks==3.5.1``).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from robustloss.data import load_dataset
from robustloss.evaluate import standard_evaluation
from robustloss.train import Phase, TrainConfig, train


def sign_test(b: int, c: int) -> float:
    """Exact two-sided p-value of b successes in b + c fair coin flips."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--norm", choices=["linf", "l2"], default="linf")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset("mnist-5k")
    with tempfile.TemporaryDirectory() as folder:
        model = train(TrainConfig(recipe=[Phase("ce", args.epochs)], seed=0), folder, data=data, progress=False,
                      log=lambda _: None, device="cpu").model.eval()
    x, y = data.test.batch(slice(0, args.n))

    started = time.perf_counter()
    ours = standard_evaluation(model, x, y, norm=args.norm, eps=args.eps, diagnostics=False, device="cpu")
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with_probes = standard_evaluation(model, x, y, norm=args.norm, eps=args.eps, device="cpu")
    probes_seconds = time.perf_counter() - started

    print(f"LeNet-5 (CE, {args.epochs} epochs), {args.n} MNIST test digits, {args.norm} eps={args.eps}, "
          f"{args.threads} threads; clean accuracy {100 * ours.clean_accuracy:.1f}%")
    print(f"robustloss standard_evaluation: robust {100 * ours.robust_accuracy:.1f}% "
          f"(95% CI {100 * ours.interval[0]:.1f}-{100 * ours.interval[1]:.1f}%) in {ours_seconds:.1f} s")
    print(f"  with diagnostics probes:      robust {100 * with_probes.robust_accuracy:.1f}% in {probes_seconds:.1f} s")
    for row in ours.per_attack:
        print(f"    {row['attack']:>10}: attacked {row['attacked']:4d}, broke first {row['newly_broken']:4d}, "
              f"robust after {100 * row['robust_after']:.1f}%, {row['seconds']:.1f} s")

    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed: no comparison (pip install --no-deps torchattacks==3.5.1)")
        return
    norm = "Linf" if args.norm == "linf" else "L2"
    peer = torchattacks.AutoAttack(model, norm=norm, eps=args.eps, version="standard", n_classes=10, seed=0)
    started = time.perf_counter()
    x_adv = peer(x, y)
    theirs_seconds = time.perf_counter() - started
    with torch.no_grad():
        theirs_robust = (model(x_adv).argmax(1) == y).numpy()
    ours_robust = ours.per_sample["robust"]
    b = int((~ours_robust & theirs_robust).sum())  # broken by ours only
    c = int((ours_robust & ~theirs_robust).sum())  # broken by theirs only
    print(f"torchattacks AutoAttack:        robust {100 * theirs_robust.mean():.1f}% in {theirs_seconds:.1f} s")
    print(f"per sample: ours only broke {b}, theirs only broke {c}; sign test p = {sign_test(b, c):.3f}")
    print(f"robust accuracy ours - theirs = {100 * (ours_robust.mean() - theirs_robust.mean()):+.1f} points; "
          f"time ours / theirs = {ours_seconds / theirs_seconds:.2f}x (with probes {probes_seconds / theirs_seconds:.2f}x)")
    stronger = "at least as strong" if c <= b or sign_test(b, c) >= 0.05 else "WEAKER"
    print(f"verdict: ours is {stronger} than torchattacks' AutoAttack on this model "
          f"({'no slower' if ours_seconds <= theirs_seconds else 'slower'})")
    print()
    print(ours.verdict)


if __name__ == "__main__":
    main()
