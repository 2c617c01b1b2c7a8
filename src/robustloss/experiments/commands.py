"""The experiment commands of the CLI: run, ls, show, export, report."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustloss.errors import RobustlossError

DEFAULT_ROOT = "runs"


def add_commands(sub) -> None:
    run = sub.add_parser("run", help="run an experiment config: expand its grid, train or reuse, evaluate, store")
    run.add_argument("config", help="experiment YAML, e.g. configs/pc_table1.yaml")
    run.add_argument("--scale", choices=["smoke", "demo", "paper"], help="preset from the file's scales: block")
    run.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                     help="override any value, e.g. --set train.optimizer.lr=0.001 (repeatable; wins over the scale)")
    run.add_argument("--report", action="store_true", help="build the report when the runs are done")
    run.add_argument("--dry-run", action="store_true", help="validate and list the cells without running them")
    run.add_argument("--tensorboard", action="store_true", help="also log training to TensorBoard (if installed)")
    _add_root(run)
    run.add_argument("--data-dir", help="data root (default: $ROBUSTLOSS_DATA or ~/.cache/robustloss)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.set_defaults(handler=cmd_run)

    ls = sub.add_parser("ls", help="list the runs in the results store with their status")
    ls.add_argument("--experiment", help="only this experiment's runs")
    ls.add_argument("--status", choices=["pending", "training", "evaluating", "done", "failed"])
    _add_root(ls)
    ls.set_defaults(handler=cmd_ls)

    show = sub.add_parser("show", help="show one run: config, metrics, evaluations, diagnostics")
    show.add_argument("run", help="run id or (a unique prefix of) its hash, as listed by `robustloss ls`")
    _add_root(show)
    show.set_defaults(handler=cmd_show)

    export = sub.add_parser("export", help="export stored results as CSV or JSON")
    export.add_argument("out", help="output file")
    export.add_argument("--format", choices=["csv", "json"], help="default: from the file extension")
    export.add_argument("--experiment", help="only this experiment")
    _add_root(export)
    export.set_defaults(handler=cmd_export)

    report = sub.add_parser("report", help="build tables, plots and an HTML page from the results store alone")
    report.add_argument("experiments", nargs="*", help="experiment names or config files (default: all in the store)")
    report.add_argument("--scale", help="which scale's runs (default: the last one run)")
    report.add_argument("--out", help="output folder (default: ROOT/reports)")
    _add_root(report)
    report.set_defaults(handler=cmd_report)


def _add_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"results folder holding results.sqlite (default: {DEFAULT_ROOT})")
    p.add_argument("--store", help="results store file (default: ROOT/results.sqlite)")


def open_store(args: argparse.Namespace, must_exist: bool = True):
    from robustloss.experiments.runner import STORE_FILE
    from robustloss.experiments.store import ResultsStore

    path = Path(args.store) if args.store else Path(args.root) / STORE_FILE
    if must_exist and not path.exists():
        raise RobustlossError(f"no results store at {path}; run an experiment first "
                              f"(robustloss run configs/FILE.yaml --scale smoke) or pass --root/--store")
    return ResultsStore(path)


def cmd_run(args: argparse.Namespace) -> int:
    from robustloss.experiments.runner import ExperimentRunner
    from robustloss.experiments.schema import load_experiment

    experiment = load_experiment(args.config, args.scale, args.overrides)
    cells = experiment.cells
    distinct = len({c.hash for c in cells})
    print(f"{experiment.name} ({experiment.scale}): {len(cells)} cells, {distinct} distinct runs")
    if args.dry_run:
        for cell in cells:
            recipe = " -> ".join(f"{p.loss} x{p.epochs}" for p in cell.train.recipe)
            print(f"  {cell.hash}  {cell.name}: {cell.train.model} on {cell.train.dataset}, {recipe}, "
                  f"{len(cell.evaluate.attacks)} attacks")
        return 0
    store = open_store(args, must_exist=False)
    root = Path(args.root)
    runner = ExperimentRunner(root, store=store, device=args.device, data_dir=args.data_dir,
                              progress=not args.no_progress, tensorboard=args.tensorboard)
    outcomes = runner.run(experiment)
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} cells done"
          + (f"; {len(failed)} failed (see `robustloss ls --status failed`)" if failed else ""))
    if args.report and not failed:
        from robustloss.report.experiment import build_report

        files = build_report(store, experiment.name, root / "reports", scale=experiment.scale, log=lambda _: None)
        print(files.markdown.read_text())
        print(f"Report: {files.html}")
    return 1 if failed else 0


def cmd_ls(args: argparse.Namespace) -> int:
    store = open_store(args)
    runs = store.runs(experiment=args.experiment, status=args.status)
    if not runs:
        print("no runs")
        return 0
    print(f"{'id':>4}  {'hash':<16}  {'status':<10}  {'kind':<10}  {'experiment':<14}  {'updated':<25}  name")
    for r in runs:
        print(f"{r.id:>4}  {r.hash:<16}  {r.status:<10}  {r.kind:<10}  {r.experiment or '-':<14}  "
              f"{r.updated_at or '':<25}  {r.name}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import yaml

    store = open_store(args)
    run = store.get_run(args.run)
    print(f"run {run.id}  {run.hash}  [{run.status}]  {run.kind}  {run.experiment}  {run.name}")
    print(f"created {run.created_at}  started {run.started_at}  finished {run.finished_at}  code {run.code_revision}")
    print(f"model {run.model_dir}\nrun   {run.run_dir}")
    if run.error:
        print(f"error: {run.error}")
    print("\nconfig:\n" + yaml.safe_dump(run.config, sort_keys=False).rstrip())
    metrics = store.metrics(run.id)
    if metrics:
        last = metrics[-1]
        print(f"\ntraining: {len(metrics)} epochs; last: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in last.items()))
    rows = store.evaluation_rows(run.id)
    if rows:
        print(f"\n{'attack':<22} {'eps':>8} {'objective':<10} {'n':>6} {'accuracy':>9} {'mean L2':>8} {'mean Linf':>9}")
        for r in rows:
            eps = "-" if r["eps"] is None else f"{r['eps']:g}"
            print(f"{r['name']:<22} {eps:>8} {r['objective'] or '':<10} {r['n']:>6} {100 * r['accuracy']:>8.1f}% "
                  f"{r['mean_l2']:>8.3f} {r['mean_linf']:>9.3f}")
    diagnostics = store.diagnostics(run.id)
    if diagnostics:
        print("\ndiagnostics:")
        for d in diagnostics:
            print(f"  {d['number']}. [{d['status']}] {d['check']}: {d['detail']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args)
    fmt = args.format or Path(args.out).suffix.lstrip(".").lower()
    path = store.export(args.out, fmt, experiment=args.experiment)
    print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robustloss.report.experiment import build_report

    store = open_store(args)
    names = [_experiment_name(e) for e in args.experiments] or store.experiments()
    if not names:
        raise RobustlossError(f"the store {store.path} holds no experiments yet")
    out = Path(args.out) if args.out else Path(args.root) / "reports"
    for name in names:
        files = build_report(store, name, out, scale=args.scale, log=lambda _: None)
        print(f"{name}: {files.html}  (+ {files.markdown.name}, {files.csv.name}, {files.latex.name}, "
              f"{len(files.plots)} plots)")
    return 0


def _experiment_name(text: str) -> str:
    """An experiment name, or the name inside a config file given instead."""
    if text.endswith((".yaml", ".yml")) and Path(text).exists():
        import yaml

        return str((yaml.safe_load(Path(text).read_text()) or {}).get("name", text))
    return text

