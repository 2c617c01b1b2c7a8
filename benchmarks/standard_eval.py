"""``standard_evaluation`` against torchattacks' AutoAttack: time and strength in one run.

Both run AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries; each attack
only on the samples still standing) on the same model, images and budget. torchattacks is timed twice:
its ``AutoAttack`` class, which runs APGD, APGD-T and FAB-T for torchattacks' default of 10 iterations,
and its four attacks with AutoAttack's published settings (100 iterations, as ours): the equal-work pair.
Ours runs without its diagnostics probes (``diagnostics=False``) so that both do the same work; a second
timing with the probes shows what the diagnostics cost. Ours evaluates every budget given, so each peer
runs once per budget and its times are summed.

Strength is compared per sample: b = samples only ours broke, c = samples only theirs broke. Both
ensembles are randomised (random starts, Square's random search), so b and c are both noise when the
attacks are equally strong; the exact two-sided sign test on (b, c) says whether the difference is
more than that. Ours is "at least as strong" when its robust accuracy is not above theirs by more
than that noise (c not significantly larger than b).

    .venv/bin/python benchmarks/standard_eval.py [--n 500] [--eps 0.1] [--norm linf] [--epochs 3]
    .venv/bin/python benchmarks/standard_eval.py --case quantised --eps 0.3 --n 200
    .venv/bin/python benchmarks/standard_eval.py --case mmc --eps 0.1,0.2,0.3 --epochs 10 --n 200

The model is a LeNet-5 trained on the embedded MNIST digits (``--epochs``, seed 0): with CE; with CE
behind a non-differentiable input quantiser ``round(4x)/4`` (zero input gradients: only the gradient-free
Square can break it); or with the MMC loss, whose CE input gradients vanish. The last two also print
the worst case of the papers' white-box suite with the CE objective, the number those models would
have been given without the standard evaluation.
torchattacks is optional (``pip install --no-deps torchattacks==3.5.1``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from robustloss.data import load_dataset
from robustloss.evaluate import AttackSpec, evaluate, standard_evaluation, worst_case_robust
from robustloss.evaluate.diagnostics import sign_test
from robustloss.train import Phase, TrainConfig, train


class RoundToQuarters(torch.autograd.Function):
    """x -> round(4x)/4 with its true, zero gradient: a non-differentiable input quantiser."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(4 * x) / 4

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class Quantised(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(RoundToQuarters.apply(x))


def build_model(case: str, epochs: int, data) -> torch.nn.Module:
    """The model under test: CE LeNet-5, the same behind the quantiser, or an MMC LeNet-5."""
    recipe = [Phase("mmc" if case == "mmc" else "ce", epochs)]
    with tempfile.TemporaryDirectory() as folder:
        model = train(TrainConfig(recipe=recipe, seed=0), folder, data=data, progress=False,
                      log=lambda _: None, device="cpu").model.eval()
    return Quantised(model).eval() if case == "quantised" else model


def single_objective_worst_case(model, x, y, budgets: list[float]) -> list[float]:
    """What an evaluation with the papers' white-box suite and the CE objective reports (worst case)."""
    plan = [AttackSpec(name, eps=budgets, params={"objective": "ce"}) for name in ("fgsm", "bim", "pgd", "mim")]
    evaluation = evaluate(model, (x, y), plan, seed=0, mode="worst-case", progress=False, device="cpu")
    return [float(worst_case_robust(evaluation, "linf", eps).mean()) for eps in budgets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--eps", default="0.1", help="comma-separated budgets; AutoAttack runs at the largest")
    parser.add_argument("--norm", choices=["linf", "l2"], default="linf")
    parser.add_argument("--case", choices=["ce", "quantised", "mmc"], default="ce",
                        help="ce: LeNet-5; quantised: the same behind round(4x)/4; mmc: an MMC LeNet-5")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [float(e) for e in args.eps.split(",")]

    data = load_dataset("mnist-5k")
    model = build_model(args.case, args.epochs, data)
    x, y = data.test.batch(slice(0, args.n))

    started = time.perf_counter()
    ours = standard_evaluation(model, x, y, norm=args.norm, eps=budgets, diagnostics=False, device="cpu")
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with_probes = standard_evaluation(model, x, y, norm=args.norm, eps=budgets, device="cpu")
    probes_seconds = time.perf_counter() - started

    print(f"LeNet-5 ({args.case}, {args.epochs} epochs), {args.n} MNIST test digits, {args.norm} eps={args.eps}, "
          f"{args.threads} threads; clean accuracy {100 * ours.clean_accuracy:.1f}%")
    print(f"robustloss standard_evaluation: robust {100 * ours.robust_accuracy:.1f}% "
          f"(95% CI {100 * ours.interval[0]:.1f}-{100 * ours.interval[1]:.1f}%) in {ours_seconds:.1f} s")
    print("  curve: " + ", ".join(f"eps {e:g}: {100 * a:.1f}%" for e, a in ours.curve))
    print(f"  with diagnostics probes:      robust {100 * with_probes.robust_accuracy:.1f}% in {probes_seconds:.1f} s")
    for row in ours.per_attack:
        print(f"    {row['attack']:>10} eps {row['eps']:g}: attacked {row['attacked']:4d}, broke first "
              f"{row['newly_broken']:4d}, robust after {100 * row['robust_after']:.1f}%, {row['seconds']:.1f} s")
    if args.norm == "linf":
        old = single_objective_worst_case(model, x, y, budgets)
        print("FGSM/BIM/PGD/MIM with the CE objective, worst case: "
              + ", ".join(f"eps {e:g}: {100 * a:.1f}%" for e, a in zip(budgets, old)))

    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed: no comparison (pip install --no-deps torchattacks==3.5.1)")
        return
    norm = "Linf" if args.norm == "linf" else "L2"
    # torchattacks.AutoAttack runs APGD, APGD-T and FAB-T with torchattacks' default of 10 iterations;
    # AutoAttack as published (and ours) runs 100. Time both: the published settings are the equal-work pair.
    # Ours evaluates every budget, so each peer runs once per budget too (times summed).
    peers = {
        "torchattacks AutoAttack (10 iterations)": lambda eps: torchattacks.AutoAttack(
            model, norm=norm, eps=eps, version="standard", n_classes=10, seed=0),
        "torchattacks, AutoAttack's published settings (100 iterations)": lambda eps: published_autoattack(
            torchattacks, model, norm, eps),
    }
    ours_robust = worst_case_robust(ours.evaluation, args.norm, budgets[-1])
    for name, build in peers.items():
        compare(name, build, budgets, model, x, y, ours_robust, ours_seconds, probes_seconds)
    print()
    print(ours.verdict)


def published_autoattack(torchattacks, model, norm: str, eps: float):
    """torchattacks' four attacks with AutoAttack's published standard settings (Croce & Hein, ICML 2020):
    100 iterations for APGD-CE, APGD-T (9 target classes) and FAB-T, Square with 5,000 queries."""
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, norm=norm, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
        torchattacks.APGDT(model, norm=norm, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
        torchattacks.FAB(model, norm=norm, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10,
                         seed=0),
        torchattacks.Square(model, norm=norm, eps=eps, n_queries=5000, n_restarts=1, seed=0),
    ])


def compare(name: str, build, budgets: list[float], model, x, y, ours_robust, ours_seconds: float,
            probes_seconds: float) -> None:
    """Run one peer ensemble at every budget and print its time, its robust accuracy at the largest
    budget and the per-sample comparison with ours there."""
    started = time.perf_counter()
    for eps in budgets:
        x_adv = build(eps)(x, y)
    theirs_seconds = time.perf_counter() - started
    with torch.no_grad():
        theirs_robust = (model(x_adv).argmax(1) == y).numpy()
    b = int((~ours_robust & theirs_robust).sum())  # broken by ours only
    c = int((ours_robust & ~theirs_robust).sum())  # broken by theirs only
    print(f"{name}: robust {100 * theirs_robust.mean():.1f}% in {theirs_seconds:.1f} s")
    print(f"  per sample: ours only broke {b}, theirs only broke {c}; sign test p = {sign_test(b, c):.3f}")
    print(f"  robust accuracy ours - theirs = {100 * (ours_robust.mean() - theirs_robust.mean()):+.1f} points; "
          f"time ours / theirs = {ours_seconds / theirs_seconds:.2f}x "
          f"(with probes {probes_seconds / theirs_seconds:.2f}x)")
    stronger = "at least as strong as" if c <= b or sign_test(b, c) >= 0.05 else "WEAKER than"
    print(f"  verdict: ours is {stronger} {name} on this model "
          f"({'no slower' if ours_seconds <= theirs_seconds else 'slower'})")


if __name__ == "__main__":
    main()
