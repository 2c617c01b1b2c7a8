"""The experiment commands of the CLI: run, sweep, ls, show, export, report.

About 420 lines on purpose: the six commands share their store and report helpers, and the parser
function is a flat list of flags; one module per command would split those helpers across files."""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from robustloss.cli.common import add_common
from robustloss.errors import ConfigError, RobustlossError
from robustloss.experiments.shipped import find_experiment

DEFAULT_ROOT = "runs"


def add_experiment_parsers(sub) -> None:
    run = sub.add_parser("run", help="run an experiment config: expand its grid, train or reuse, evaluate, store")
    run.add_argument("config", help="a shipped experiment's name (pc-table1; `robustloss configs` lists them) or an experiment YAML file")
    run.add_argument("--scale", choices=["smoke", "demo", "paper"], help="preset from the file's scales: block")
    run.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                     help="override any value, e.g. --set train.optimizer.lr=1e-3 (read as YAML, numbers as Python "
                          "writes them, 8/255 in float fields; repeatable; wins over the scale)")
    run.add_argument("--report", action="store_true", help="build the report when the runs are done")
    run.add_argument("--dry-run", action="store_true", help="validate and list the cells without running them")
    run.add_argument("--tensorboard", action="store_true", help="also log training to TensorBoard (if installed)")
    _add_root(run)
    add_common(run)  # --data-dir, --device, --progress
    run.set_defaults(handler=closing_stores(cmd_run))

    sweep = sub.add_parser(
        "sweep", help="run an experiment over numeric values of one or two keys and plot the metric against them",
        description="Add (or replace) grid axes with --over, run the grid as `robustloss run` does (models are "
                    "trained once per training config and shared), then build the report with the sweep's CSV "
                    "and plots: a line plot for one axis, a heatmap and a 3-D surface for two.")
    sweep.add_argument("config", help="a shipped experiment's name (isce-fig3) or an experiment YAML file")
    sweep.add_argument("--over", action="append", default=[], metavar="KEY=VALUES",
                       help="a grid axis: KEY=V1,V2,... or KEY=LO:HI:N (evenly spaced) or KEY=LO:HI:N:log "
                            "(geometric, log-scale plot); e.g. --over vars.s=1:2:5, "
                            "--over evaluate.overrides.spsa.samples=32:8192:9:log (repeatable; without a "
                            "sweep: block in the file the first is the plot's x, the second its y)")
    sweep.add_argument("--scale", choices=["smoke", "demo", "paper"], help="preset from the file's scales: block")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                       help="override any value, as for `robustloss run` (repeatable)")
    sweep.add_argument("--metric", help="the plotted metric (default: the file's sweep.metric, else accuracy): "
                                        "accuracy, error_rate, mean_l2, median_l2, mean_linf")
    sweep.add_argument("--name", help="experiment name in the store (default: the file's; with a new axis, "
                                      "NAME-sweep-AXES so the file's own results stay apart)")
    sweep.add_argument("--out", help="report folder (default: ROOT/reports)")
    sweep.add_argument("--dry-run", action="store_true", help="validate and list the cells without running them")
    _add_root(sweep)
    add_common(sweep)  # --data-dir, --device, --progress
    sweep.set_defaults(handler=closing_stores(cmd_sweep))

    ls = sub.add_parser("ls", help="list the runs in the results store with their status")
    ls.add_argument("--experiment", help="only this experiment's runs")
    ls.add_argument("--status", choices=["pending", "training", "evaluating", "done", "failed"])
    _add_root(ls)
    ls.set_defaults(handler=closing_stores(cmd_ls))

    show = sub.add_parser("show", help="show one run: config, metrics, evaluations, diagnostics")
    show.add_argument("run", help="run id or (a unique prefix of) its hash, as listed by `robustloss ls`")
    _add_root(show)
    show.set_defaults(handler=closing_stores(cmd_show))

    export = sub.add_parser("export", help="export stored results as CSV or JSON")
    export.add_argument("out", help="output file")
    export.add_argument("--format", choices=["csv", "json"], help="default: from the file extension")
    export.add_argument("--experiment", help="only this experiment")
    _add_root(export)
    export.set_defaults(handler=closing_stores(cmd_export))

    report = sub.add_parser("report", help="build tables, plots and an HTML page from the results store alone")
    report.add_argument("experiments", nargs="*", help="experiment names or config files (default: all in the store)")
    report.add_argument("--scale", help="which scale's runs (default: the last one run)")
    report.add_argument("--out", help="output folder (default: ROOT/reports)")
    _add_root(report)
    report.set_defaults(handler=closing_stores(cmd_report))


def _add_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=DEFAULT_ROOT,
                   help=f"results folder holding results.sqlite, models/ and runs/ (default: {DEFAULT_ROOT}); "
                        "created if missing, refused if it is a file")
    p.add_argument("--store", help="results store file (default: ROOT/results.sqlite)")


def check_root(args: argparse.Namespace) -> None:
    """--root must be a folder (or not exist yet) and --store a file: a results folder that is really a
    file would otherwise surface later as an odd error from deep inside SQLite or mkdir."""
    root = Path(args.root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--root {root}: is a file, not a folder; give the folder that holds (or will hold) "
                          "results.sqlite, models/ and runs/")
    if args.store and Path(args.store).is_dir():
        raise ConfigError(f"--store {args.store}: is a folder; give the results file itself "
                          f"(e.g. {Path(args.store) / 'results.sqlite'}) or use --root")


def check_out_folder(out: Path) -> None:
    """A report folder that is really a file is refused before any work (mkdir would fail at the end)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder; give a folder for the report files")


_open_stores: list = []  # stores opened by the running command, closed when it returns (closing_stores)


def closing_stores(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` that closes every store it opened, however it ends: a closed store leaves no -wal or
    -shm file behind, and a command called in process (tests, notebooks) does not keep the file open."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        finally:
            while _open_stores:
                _open_stores.pop().close()

    return run


def open_store(args: argparse.Namespace, must_exist: bool = True):
    from robustloss.experiments.runner import STORE_FILE
    from robustloss.experiments.store import ResultsStore

    check_root(args)
    path = Path(args.store) if args.store else Path(args.root) / STORE_FILE
    if must_exist and not path.exists():
        raise RobustlossError(f"no results store at {path}; run an experiment first "
                              f"(robustloss run configs/FILE.yaml --scale smoke) or pass --root/--store")
    store = ResultsStore(path)
    _open_stores.append(store)
    return store


def _run_grid(args: argparse.Namespace, experiment, tensorboard: bool = False) -> tuple:
    """Run every cell (and the analyses) at --root; print the tally. Returns (store, root, failures)."""
    from robustloss.experiments.runner import ExperimentRunner

    store = open_store(args, must_exist=False)
    store.check_integrity()  # refuse to add results to a damaged file: they could not be read back
    root = Path(args.root)
    runner = ExperimentRunner(root, store=store, device=args.device, data_dir=args.data_dir,
                              progress=args.progress, tensorboard=tensorboard)
    outcomes = runner.run(experiment)
    failed: list = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} cells done"
          + (f"; {len(failed)} failed (see `robustloss ls --status failed`)" if failed else ""))
    for failure in runner.analysis_failures:
        print(f"analysis failed: {failure}", file=sys.stderr)
    return store, root, failed + runner.analysis_failures


def cmd_run(args: argparse.Namespace) -> int:
    from robustloss.experiments.schema import load_experiment

    check_root(args)
    experiment = load_experiment(args.config, args.scale, args.overrides)
    cells = experiment.cells
    distinct = len({c.hash for c in cells})
    print(f"{experiment.name} ({experiment.scale}): {len(cells)} cells, {distinct} distinct runs")
    if args.dry_run:
        for cell in cells:
            recipe = " -> ".join(f"{p.loss} x{p.epochs}" for p in cell.train.recipe)
            at = cell.train.adversarial
            adversarial = f" with {at.method} AT (eps {at.eps})" if at is not None else ""
            if cell.evaluate.defense is not None:
                adversarial += f", attacked behind the {cell.evaluate.defense.name} defence"
            print(f"  {cell.hash}  {cell.name}: {cell.train.model} on {cell.train.dataset}, {recipe}{adversarial}, "
                  f"{len(cell.evaluate.attacks)} attacks")
        for analysis in experiment.file.analyses:
            print(f"  then analysis {analysis.name} {analysis.params or ''}")
        return 0
    store, root, failed = _run_grid(args, experiment, tensorboard=args.tensorboard)
    if args.report and not failed:
        from robustloss.report.experiment import build_report

        files = build_report(store, experiment.name, root / "reports", scale=experiment.scale, log=lambda _: None)
        print(files.markdown.read_text())
        print(f"Report: {files.html}")
    return 1 if failed else 0


# -- sweep ----------------------------------------------------------------------------------------
@dataclass
class SweepAxis:
    """One --over: a key and the values it takes."""

    key: str
    values: list[int | float]
    log: bool = False  # written as LO:HI:N:log, so the plot's axis is logarithmic

    def assignment(self) -> str:
        """The --set that makes it a key axis of the grid."""
        return f"grid.{self.key}={json.dumps(self.values)}"


OVER_FORMS = "KEY=V1,V2,... or KEY=LO:HI:N or KEY=LO:HI:N:log"


def parse_over(text: str) -> SweepAxis:
    """``vars.s=1,1.5,2``, ``vars.s=1:2:5`` (evenly spaced) or ``...samples=32:8192:9:log`` (geometric).

    Integers stay integers (an attack's ``samples`` must be one); a list with any float is all floats,
    so ``1,1.5`` and ``1.0,1.5`` give the same runs.
    """
    from robustloss.experiments.overrides import split_path
    from robustloss.experiments.schema import CELL_SECTIONS

    key, sep, spec = (part.strip() for part in text.partition("="))
    if not sep or not key or not spec:
        raise ConfigError(f"--over {text!r}: expected {OVER_FORMS}, e.g. vars.s=1:2:5")
    if split_path(key)[0] not in CELL_SECTIONS:
        raise ConfigError(f"--over {key}: a swept key starts with {', '.join(s + '.' for s in CELL_SECTIONS)} "
                          f"(e.g. vars.s, train.optimizer.lr, evaluate.overrides.spsa.samples)")
    if ":" in spec:
        axis = SweepAxis(key, *_spaced(key, spec))
    else:
        numbers = [_number(key, part) for part in spec.split(",")]
        if any(isinstance(v, float) for v in numbers):
            numbers = [float(v) for v in numbers]
        axis = SweepAxis(key, numbers)
    repeated = sorted({v for v in axis.values if axis.values.count(v) > 1})
    if repeated:
        raise ConfigError(f"--over {key}: value {repeated[0]:g} is given twice")
    return axis


def _spaced(key: str, spec: str) -> tuple[list[int | float], bool]:
    parts = spec.split(":")
    log = parts[-1].strip().lower() == "log"
    if log:
        parts = parts[:-1]
    if len(parts) != 3:
        raise ConfigError(f"--over {key}={spec}: expected LO:HI:N or LO:HI:N:log (e.g. 1:2:5 or 32:8192:9:log)")
    lo, hi, n = (_number(key, p) for p in parts)
    if not isinstance(n, int) or n < 2:
        raise ConfigError(f"--over {key}={spec}: N (the number of values) must be an integer >= 2, got {n}")
    if lo == hi:
        raise ConfigError(f"--over {key}={spec}: LO and HI are equal; give two different ends")
    if log and (lo <= 0 or hi <= 0):
        raise ConfigError(f"--over {key}={spec}: a geometric (:log) range needs LO and HI > 0")
    import numpy as np

    raw = np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)
    values = [float(f"{v:.12g}") for v in raw]  # 1.2500000000000002 -> 1.25: labels and hashes stay tidy
    if isinstance(lo, int) and isinstance(hi, int) and all(v.is_integer() for v in values):
        return [int(v) for v in values], log
    return values, log


def _number(key: str, text: str) -> int | float:
    from robustloss.config import parse_number

    text = text.strip()
    try:
        value = parse_number(text)  # 3, 0.5, 1e-3, 8/255
    except ValueError:
        raise ConfigError(f"--over {key}: {text!r} is not a number (sweep values must be numeric)") from None
    if not math.isfinite(value):
        raise ConfigError(f"--over {key}: {text!r} is not a finite number")
    return value


def sweep_overrides(raw: dict, axes: list[SweepAxis], metric: str | None = None, name: str | None = None) -> list[str]:
    """The --set assignments that turn experiment file ``raw`` into the requested sweep: the new grid
    axes, the sweep block when the file has none, the metric, and a name of its own when the grid
    gains an axis (so the file's own results are not mixed with cells of another shape)."""
    keys = [a.key for a in axes]
    if len(set(keys)) < len(keys):
        raise ConfigError(f"--over: each key once; got {', '.join(keys)}")
    has_sweep = bool(raw.get("sweep"))
    if not axes and not has_sweep:
        raise ConfigError(f"{raw.get('name', 'this experiment')} has no sweep: block; name the axes with --over "
                          f"{OVER_FORMS} (e.g. --over vars.s=1:2:5)")
    out = [axis.assignment() for axis in axes]
    if not has_sweep:
        out += [f"sweep.x={json.dumps(axes[0].key)}", f"sweep.log_x={json.dumps(axes[0].log)}"]
        if len(axes) > 1:
            out += [f"sweep.y={json.dumps(axes[1].key)}", f"sweep.log_y={json.dumps(axes[1].log)}"]
    if metric:
        out.append(f"sweep.metric={json.dumps(metric)}")
    grid = raw.get("grid") or {}
    added = [k for k in keys if k not in grid]
    if name:
        out.append(f"name={json.dumps(name)}")
    elif added and raw.get("name"):
        suffix = "-".join(re.sub(r"[^\w.-]+", "-", k.rsplit(".", 1)[-1]) for k in added)
        out.append(f"name={json.dumps(str(raw['name']) + '-sweep-' + suffix)}")
    return out


def cmd_sweep(args: argparse.Namespace) -> int:
    from robustloss.config import load_yaml
    from robustloss.experiments.schema import check_axis_changes_runs, load_experiment
    from robustloss.experiments.schema import seed_axes
    from robustloss.report.experiment import build_report

    check_root(args)
    path = find_experiment(args.config)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top of the file (name:, train:, evaluate:, ...)")
    axes = [parse_over(text) for text in args.over]
    if args.out:
        check_out_folder(Path(args.out))
    experiment = load_experiment(path, args.scale, [*args.overrides, *sweep_overrides(raw, axes, args.metric,
                                                                                        args.name)])
    sweep, cells = experiment.file.sweep, experiment.cells
    unplotted = [a.key for a in axes if a.key not in sweep.axes]
    for axis in unplotted:  # the plotted axes were checked with the sweep block
        check_axis_changes_runs(axis, cells, f"--over {axis}")
    print(f"{experiment.name} ({experiment.scale}): {sweep.metric} over {' x '.join(sweep.axes)}; {len(cells)} cells, "
          f"{len({c.hash for c in cells})} distinct runs, {len({c.train_hash for c in cells})} distinct models")
    for axis in unplotted:
        averaged = axis in sweep.average or bool(seed_axes([axis]))
        print(f"  {axis} is not plotted: {'averaged over' if averaged else 'each value is a series of its own'}")
    if args.dry_run:
        for cell in cells:
            print(f"  {cell.hash}  model {cell.train_hash}  {cell.name}")
        return 0
    store, root, failed = _run_grid(args, experiment)
    out = Path(args.out) if args.out else root / "reports"
    files = build_report(store, experiment.name, out, scale=experiment.scale, log=lambda _: None)
    print(f"Sweep values: {files.sweep_csv}")
    for plot in files.plots:
        if plot.name.startswith(f"{experiment.name}-{experiment.scale}-sweep"):
            print(f"Sweep plot:   {plot}")
    print(f"Report:       {files.html}  (+ {files.markdown.name})")
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
    from robustloss.experiments.store import EXPORT_FORMATS

    fmt = args.format or Path(args.out).suffix.lstrip(".").lower()
    if fmt not in EXPORT_FORMATS:  # checked before the store is opened: nothing to read for a wrong name
        suffix = Path(args.out).suffix or "no extension"
        raise ConfigError(f"export {args.out}: cannot tell the format from {suffix!r}; name the file .csv or .json, "
                          "or pass --format csv|json")
    if Path(args.out).is_dir():
        raise ConfigError(f"export {args.out}: is a folder; give a file name such as {Path(args.out) / 'results.csv'}")
    store = open_store(args)
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
    check_out_folder(out)
    for name in names:
        files = build_report(store, name, out, scale=args.scale, log=lambda _: None)
        print(f"{name}: {files.html}  (+ {files.markdown.name}, {files.csv.name}, {files.latex.name}, "
              f"{len(files.plots)} plots)")
    return 0


def _experiment_name(text: str) -> str:
    """An experiment name, or the name inside a config file given instead."""
    if text.endswith((".yaml", ".yml")) and Path(text).exists():
        from robustloss.config import load_yaml

        document = load_yaml(text)
        if not isinstance(document, dict):
            raise ConfigError(f"{text}: expected an experiment file (a mapping with name:, train:, ...)")
        return str(document.get("name", text))
    return text

