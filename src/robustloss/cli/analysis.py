"""``robustloss analyze NAME RUN...``: run one registered analysis on trained models.

RUN is a model folder (``robustloss train --out DIR``, or ``ROOT/models/HASH`` of the
experiment runner) or a run id / hash prefix in the results store at ``--root``. Where the
outputs go, so that the run's report picks them up:

* models of a results store: ``ROOT/reports/analysis/``, recorded in the store, so
  ``robustloss report`` shows the analysis in the report of every experiment whose models
  it covers; each model is labelled by its grid values (``CE``, ``PC-LC``);
* a folder from ``robustloss train``: ``RUN/analysis/`` beside its ``eval/`` report.

``--out`` overrides the folder (outputs of store models are still recorded).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from robustloss.analysis.tsne import TSNE_METHODS
from robustloss.errors import ConfigError
from robustloss.experiments.runner import STORE_FILE


def add_analyze_parser(sub) -> None:
    analyze = sub.add_parser("analyze", help="analyses of trained models: probability gaps, misclassification "
                                             "rank, feature embeddings, low-dimensional feature space, "
                                             "training time")
    kinds = analyze.add_subparsers(metavar="ANALYSIS")
    gap = kinds.add_parser("gap", help="distribution of f_y - max_{y'!=y} f_y' over the test set, per model")
    rank = kinds.add_parser("rank", help="rank of the adversarial class among the clean probabilities (PC Fig. 2)")
    embedding = kinds.add_parser("embedding", help="t-SNE of penultimate features with successful adversarial "
                                                   "examples overlaid (PC Fig. 1 and 3)")
    features = kinds.add_parser("features", help="2-D/3-D feature layer plotted directly, with PGD trajectories "
                                                 "for the ce and adaptive objectives (MMC Fig. 3b, I-SCE Fig. 4)")
    training_time = kinds.add_parser("training-time", help="clean test error against wall-clock training time, "
                                                           "from each model's metrics.csv (MMC Fig. 3a)")
    for name, p in (("gap", gap), ("rank", rank), ("embedding", embedding), ("features", features),
                    ("training-time", training_time)):
        p.add_argument("runs", nargs="+", metavar="RUN",
                       help="model folder (robustloss train --out, ROOT/models/HASH) or run id/hash in the store")
        p.add_argument("--n-test", type=int, default=None, help="only the first N test samples")
        p.add_argument("--label", action="append", default=[], help="legend label per RUN, in order (repeatable)")
        p.add_argument("--root", default="runs", help="results folder for run ids/hashes (default: runs)")
        p.add_argument("--out", help="output folder (default: ROOT/reports/analysis for store models, else RUN/analysis)")
        p.add_argument("--data-dir", help="data root (default: $ROBUSTLOSS_DATA or ~/.cache/robustloss)")
        p.add_argument("--device", default="auto")
        p.set_defaults(handler=cmd_analyze, analysis=name)
    rank.add_argument("--attacks", default="fgsm,mim", help="comma-separated L-inf attacks (default: fgsm,mim)")
    rank.add_argument("--eps-step", type=float, default=0.005, help="grid step (paper: fine, e.g. 0.005)")
    rank.add_argument("--eps-max", type=float, default=0.3)
    rank.add_argument("--steps", type=int, default=None,
                      help="iterative attacks: steps of 2.5*eps/steps at each eps (default: the attack's own)")
    embedding.add_argument("--attack", default="pgd", help="attack or preset crafting the adversarial examples "
                           "(default: pgd, L-inf, 40 steps of 0.01 from a random start)")
    embedding.add_argument("--eps", type=float, default=0.1, help="attack budget (default: 0.1)")
    embedding.add_argument("--n", type=int, default=1000,
                           help="class-stratified subsample of the test split to embed (default: 1000)")
    embedding.add_argument("--method", default="auto", choices=TSNE_METHODS,
                           help="t-SNE backend: auto uses openTSNE when installed, else scikit-learn")
    embedding.add_argument("--clean-panels", action="store_true",
                           help="beside each model's panel, its clean samples alone (PC Fig. 3a/c)")
    features.add_argument("--points", type=int, default=6, help="clean inputs to follow through the attack")
    features.add_argument("--attack", default="pgd", help="iterative gradient attack (pgd, bim, mim, pgd-l2)")
    features.add_argument("--eps", type=float, default=0.3, help="attack budget (default: 0.3, the MMC figure's)")
    features.add_argument("--steps", type=int, default=20, help="attack iterations to trace (default: 20)")
    features.add_argument("--step-size", type=float, default=None, help="default: 2.5 * eps / steps")
    features.add_argument("--objectives", default="ce,adaptive",
                          help="comma-separated attack objectives, one plot column each (default: ce,adaptive)")
    training_time.add_argument("--reference", default=None,
                               help="label of the model the others' times are compared with (default: the first)")
    for p in (rank, embedding, features):
        p.add_argument("--seed", type=int, default=0, help="random starts, subsample and t-SNE seed")


# The analysis parameters each command's flags carry (each flag's dest is the parameter's name).
PARAMETERS = {
    "gap": (),
    "rank": ("attacks", "eps_step", "eps_max", "steps", "seed"),
    "embedding": ("attack", "eps", "n", "method", "seed", "clean_panels"),
    "features": ("points", "attack", "eps", "steps", "step_size", "objectives", "seed"),
    "training-time": ("reference",),
}


@dataclass
class ResolvedRun:
    folder: Path  # holds model.pt
    label: str
    store_root: Path | None  # the results folder managing this model, if any


def cmd_analyze(args: argparse.Namespace) -> int:
    from robustloss.analysis.registry import run_analysis

    if args.label and len(args.label) != len(args.runs):
        raise ConfigError(f"--label: give one per RUN ({len(args.runs)}), got {len(args.label)}")
    resolved = [resolve_run(run, Path(args.root)) for run in args.runs]
    for run, label in zip(resolved, args.label):
        run.label = label
    labels = [r.label for r in resolved]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two RUNs share the label {next(l for l in labels if labels.count(l) > 1)!r}; "
                          f"tell them apart with --label")
    roots = {r.store_root for r in resolved}
    store_root = roots.pop() if len(roots) == 1 else None
    if args.out:
        out = Path(args.out)
    elif store_root is not None:
        out = store_root / "reports" / "analysis"
    else:
        out = resolved[0].folder / "analysis"
    prefix = "-".join(r.folder.name[:8] for r in resolved) + "-" if store_root is not None else ""
    params = {name: getattr(args, name) for name in PARAMETERS[args.analysis]}
    if "attacks" in params:
        params["attacks"] = [a.strip() for a in params["attacks"].split(",") if a.strip()]
    if "objectives" in params:
        params["objectives"] = [o.strip() for o in params["objectives"].split(",") if o.strip()]
    subjects = [_subject(r, args) for r in resolved]
    result = run_analysis(args.analysis, subjects, out, prefix=prefix, **params)
    for line in result.lines:
        print(line)
    print("wrote " + ", ".join(str(f) for f in result.files))
    if store_root is not None:
        _record(store_root, args.analysis, resolved, params | {"n_test": args.n_test}, result)
    return 0


def resolve_run(ref: str, root: Path) -> ResolvedRun:
    """A model folder, or a run id / hash prefix of the store at ``root``."""
    from robustloss.train.run_folder import MODEL_FILE

    path = Path(ref)
    if (path / MODEL_FILE).exists():
        managed = path.resolve().parent.name == "models" and (path.resolve().parent.parent / STORE_FILE).exists()
        store_root = path.resolve().parent.parent if managed else None
        label = _store_label(store_root, path.resolve().name) if store_root else path.resolve().name
        return ResolvedRun(path, label, store_root)
    if path.exists():
        raise ConfigError(f"{ref}: no {MODEL_FILE} in this folder; pass a trained model's folder "
                          f"(robustloss train --out DIR, or ROOT/models/HASH)")
    if not (root / STORE_FILE).exists():
        raise ConfigError(f"{ref}: not a model folder, and there is no results store at {root / STORE_FILE} "
                          f"to look it up in (pass --root)")
    from robustloss.experiments.store import ResultsStore

    with ResultsStore(root / STORE_FILE) as store:
        run = store.get_run(int(ref) if ref.isdigit() else ref)
    folder = root / "models" / run.train_hash
    if not (folder / MODEL_FILE).exists():
        raise ConfigError(f"run {ref} ({run.name}) has no trained model in {folder} yet (status {run.status})")
    return ResolvedRun(folder, _store_label(root, run.train_hash), root)


def _store_label(root: Path, train_hash: str) -> str:
    """The grid values that set this model apart within its experiment (e.g. ``PC-LC``)."""
    from robustloss.experiments.store import ResultsStore

    with ResultsStore(root / STORE_FILE) as store:
        for experiment in store.experiments():
            cells = store.cells(experiment)
            mine = [c for c in cells if store.get_run(c.run_id).train_hash == train_hash]
            if mine:
                axes = [a for a in mine[0].cell if len({c.cell.get(a) for c in cells}) > 1] or list(mine[0].cell)
                return " · ".join(str(mine[0].cell[a]) for a in axes) or train_hash
    return train_hash


def _subject(run: ResolvedRun, args: argparse.Namespace):
    from robustloss.analysis.registry import Subject
    from robustloss.data import load_dataset
    from robustloss.device import resolve_device
    from robustloss.models.saved import load_model
    from robustloss.train import load_config
    from robustloss.train.run_folder import MODEL_FILE

    device = resolve_device(args.device)
    model = load_model(run.folder / MODEL_FILE)[0].to(device).eval()
    test = load_dataset(load_config(run.folder).dataset, args.data_dir).test
    if args.n_test is not None:
        test = test.subset(slice(0, args.n_test))
    return Subject(run.label, model, test, device, key=run.folder.resolve().name, folder=run.folder)


def _record(root: Path, name: str, runs: list[ResolvedRun], params: dict, result) -> None:
    from robustloss.experiments.store import ResultsStore

    def stored(path: Path) -> str:  # relative to the store's folder when inside it
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            return str(path.resolve())

    with ResultsStore(root / STORE_FILE) as store:
        store.save_analysis(name=name, models={r.label: r.folder.resolve().name for r in runs}, params=params,
                            files=[stored(f) for f in result.files], summary=result.summary)
    print(f"recorded in {root / STORE_FILE}: `robustloss report` shows it with the experiments of these models")
