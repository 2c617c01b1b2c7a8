"""``robustloss analyze gap|rank RUN...``: the analyses on trained runs, written as CSV and PNG."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def add_command(sub) -> None:
    analyze = sub.add_parser("analyze", help="analyses of trained runs: probability gaps, misclassification rank")
    kinds = analyze.add_subparsers(metavar="ANALYSIS")
    gap = kinds.add_parser("gap", help="distribution of f_y - max_{y'!=y} f_y' over the test set, per run")
    rank = kinds.add_parser("rank", help="rank of the adversarial class among the clean probabilities (PC Fig. 2)")
    for p in (gap, rank):
        p.add_argument("runs", nargs="+", help="run folders holding model.pt (robustloss train --out, or ROOT/models/HASH)")
        p.add_argument("--n-test", type=int, default=None, help="only the first N test samples")
        p.add_argument("--out", default="runs/analysis", help="output folder (default: runs/analysis)")
        p.add_argument("--data-dir", help="data root (default: $ROBUSTLOSS_DATA or ~/.cache/robustloss)")
        p.add_argument("--device", default="auto")
    rank.add_argument("--attack", default="fgsm", help="fgsm or mim (or any L-inf attack)")
    rank.add_argument("--eps-step", type=float, default=0.005, help="grid step (paper: fine, e.g. 0.005)")
    rank.add_argument("--eps-max", type=float, default=0.3)
    gap.set_defaults(handler=cmd_gap)
    rank.set_defaults(handler=cmd_rank)


def _load(run: str, args):
    from robustloss.data import load_dataset
    from robustloss.device import resolve_device
    from robustloss.models.saved import load_model
    from robustloss.train import load_config
    from robustloss.train.trainer import MODEL_FILE

    device = resolve_device(args.device)
    model = load_model(Path(run) / MODEL_FILE)[0].to(device).eval()
    test = load_dataset(load_config(run).dataset, args.data_dir).test
    if args.n_test is not None:
        test = test.subset(slice(0, args.n_test))
    return model, test, device


def _label(run: str) -> str:
    return Path(run).resolve().name


def cmd_gap(args: argparse.Namespace) -> int:
    from robustloss.analysis.plots import plot_gap_distributions
    from robustloss.analysis.probability_gap import probability_gaps, summarize_gaps

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gaps, rows = {}, []
    for run in args.runs:
        model, test, device = _load(run, args)
        gaps[_label(run)] = probability_gaps(model, test, device=device)
        s = summarize_gaps(gaps[_label(run)])
        rows.append({"run": _label(run), "n": s.n, "mean": s.mean, "std": s.std, **s.quantiles,
                     **{f"below_{k}": v for k, v in s.below.items()}})
        print(f"{_label(run)}: mean gap {s.mean:.3f} ± {s.std:.3f} (median {s.quantiles['median']:.3f}, "
              f"{100 * s.below['0']:.1f}% misclassified) on {s.n} samples")
    _write_csv(out / "probability-gap.csv", rows)
    plot = plot_gap_distributions(gaps, out / "probability-gap.png")
    print(f"wrote {out / 'probability-gap.csv'} and {plot}")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from robustloss.analysis.plots import plot_rank_study
    from robustloss.analysis.rank import RANK_BINS, misclassification_ranks

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = int(round(args.eps_max / args.eps_step))
    grid = [round(args.eps_step * k, 10) for k in range(1, steps + 1)]
    studies, rows = {}, []
    for run in args.runs:
        model, test, device = _load(run, args)
        x, y = test.batch(slice(0, len(test)))
        study = misclassification_ranks(model, x.to(device), y.to(device), attack=args.attack, eps_grid=grid)
        studies[_label(run)] = study
        for eps, new, counts in zip(study.eps, study.new_successes, study.rank_counts):
            rows.append({"run": _label(run), "attack": args.attack, "eps": eps, "new_successes": new, **counts})
        shares = ", ".join(f"{b} {v:.1f}%" for b, v in study.percentages().items())
        print(f"{_label(run)} ({args.attack}): {sum(study.new_successes)} adversarial examples; {shares}")
    _write_csv(out / f"rank-{args.attack}.csv", rows)
    plot = plot_rank_study(studies, out / f"rank-{args.attack}.png", title=f"Misclassification rank, {args.attack}")
    print(f"wrote {out / f'rank-{args.attack}.csv'} and {plot}  (rank bins: {', '.join(RANK_BINS)})")
    return 0


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
