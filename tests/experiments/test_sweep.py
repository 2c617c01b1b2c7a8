"""Sweeps: --over parsing, the sweep: block's validation, the values collected from the store,
the plots, and `robustloss sweep` end to end."""

from __future__ import annotations

import csv
import textwrap

import numpy as np
import pytest

from robustloss.cli import main
from robustloss.errors import ConfigError
from robustloss.cli.experiments import parse_over, sweep_overrides
from robustloss.experiments.runner import ExperimentRunner
from robustloss.experiments.schema import load_experiment
from robustloss.report.experiment import build_report
from robustloss.report.sweep import (
    SeriesKey,
    Sweep,
    SweepPoint,
    collect_sweep,
    plot_sweep_heatmaps,
    plot_sweep_lines,
    plot_sweep_surfaces,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Two cheap attacks on a tiny model; the grid and sweep are added per test.
BASE = """\
name: tiny-sweep
train:
  dataset: mnist-5k
  model: lenet5
  recipe: [{loss: ce, epochs: 1}]
  max_train_samples: 200
  batch_size: 100
evaluate:
  n_test: 24
  batch_size: 24
  diagnostics: false
  attacks:
    - {attack: fgsm, eps: [0.1, 0.2], label: FGSM}
    - {attack: pgd, eps: [0.2], params: {steps: 2, step_size: 0.05}, label: PGD}
"""


def write(tmp_path, extra: str = "", name: str = "sweep.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent(extra))
    return path


def config_error(tmp_path, extra: str, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, extra), None, overrides)
    return str(info.value)


# -- --over ----------------------------------------------------------------------------------------
def test_over_lists_keep_integers_and_make_mixed_lists_floats():
    axis = parse_over("evaluate.overrides.spsa.samples=32,128,4096")
    assert (axis.key, axis.values, axis.log) == ("evaluate.overrides.spsa.samples", [32, 128, 4096], False)
    assert parse_over("vars.s = 1, 1.5 ,2").values == [1.0, 1.5, 2.0]
    assert all(isinstance(v, float) for v in parse_over("vars.s=1,1.5").values)
    assert parse_over("train.optimizer.lr=1e-3,1e-2").values == [0.001, 0.01]


def test_over_linspace_and_geomspace_shorthands():
    assert parse_over("vars.s=1:2:5").values == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert parse_over("vars.n=0:10:6").values == [0, 2, 4, 6, 8, 10]  # integer ends, integer steps
    axis = parse_over("evaluate.overrides.spsa.samples=32:8192:9:log")
    assert axis.values == [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192] and axis.log
    assert all(isinstance(v, int) for v in axis.values)
    assert parse_over("vars.m=0.001:0.1:3:log").values == [0.001, 0.01, 0.1]
    assert parse_over("vars.m=0.1:0.02:5").values == [0.1, 0.08, 0.06, 0.04, 0.02]  # descending is fine
    assert parse_over("vars.s=1:2:3").assignment() == "grid.vars.s=[1.0, 1.5, 2.0]"


@pytest.mark.parametrize("text, message", [
    ("vars.s", "expected KEY=V1,V2"),
    ("vars.s=", "expected KEY=V1,V2"),
    ("=1,2", "expected KEY=V1,V2"),
    ("vars.s=a,b", "'a' is not a number"),
    ("vars.s=1,,2", "'' is not a number"),
    ("vars.s=1,inf", "not a finite number"),
    ("vars.s=1,2,1", "value 1 is given twice"),
    ("vars.s=1:2", "expected LO:HI:N"),
    ("vars.s=1:2:3:4", "expected LO:HI:N"),
    ("vars.s=1:2:1", "integer >= 2"),
    ("vars.s=1:2:2.5", "integer >= 2"),
    ("vars.s=1:1:3", "LO and HI are equal"),
    ("vars.m=0:0.1:3:log", "LO and HI > 0"),
    ("method=1,2", "a swept key starts with train., evaluate., substitutes., vars."),
])
def test_over_rejects_bad_input_with_the_fix(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.").replace("+", r"\+")):
        parse_over(text)


def test_sweep_overrides_set_the_axes_and_a_name_of_its_own():
    raw = {"name": "tiny", "grid": {"train.seed": [0, 1]}}
    axes = [parse_over("vars.s=1,2"), parse_over("evaluate.overrides.spsa.samples=32:128:3:log")]
    assert sweep_overrides(raw, axes, metric="mean_l2") == [
        "grid.vars.s=[1, 2]", "grid.evaluate.overrides.spsa.samples=[32, 64, 128]",
        'sweep.x="vars.s"', "sweep.log_x=false", 'sweep.y="evaluate.overrides.spsa.samples"', "sweep.log_y=true",
        'sweep.metric="mean_l2"', 'name="tiny-sweep-s-samples"']
    # an axis the file already has: new values, same experiment; the file's sweep block is kept
    raw = {"name": "fig", "grid": {"vars.s": [1.0]}, "sweep": {"x": "vars.s"}}
    assert sweep_overrides(raw, [parse_over("vars.s=1,2")]) == ["grid.vars.s=[1, 2]"]
    assert sweep_overrides(raw, [], name="mine") == ['name="mine"']


def test_sweep_overrides_need_an_axis_and_each_key_once():
    with pytest.raises(ConfigError, match="has no sweep: block; name the axes with --over"):
        sweep_overrides({"name": "tiny"}, [])
    with pytest.raises(ConfigError, match="each key once"):
        sweep_overrides({"name": "tiny"}, [parse_over("vars.s=1,2"), parse_over("vars.s=3,4")])


# -- the sweep: block --------------------------------------------------------------------------------
def test_sweep_block_validates_and_resolves(tmp_path):
    experiment = load_experiment(write(tmp_path, """\
        grid:
          evaluate.overrides.PGD.steps: [1, 2, 4]
          train.seed: [0, 1]
        sweep: {x: evaluate.overrides.PGD.steps, rows: [PGD, clean], eps: 0.2, log_x: true}
        """))
    sweep = experiment.file.sweep
    assert (sweep.x, sweep.y, sweep.metric, sweep.eps, sweep.log_x) == ("evaluate.overrides.PGD.steps", None,
                                                                         "accuracy", [0.2], True)
    assert len(experiment.cells) == 6 and len({c.train_hash for c in experiment.cells}) == 2  # eval-only axis
    assert {c.evaluate.plan()[1].params["steps"] for c in experiment.cells} == {1, 2, 4}
    # named axes whose value names are numbers are numeric too
    load_experiment(write(tmp_path, """\
        grid:
          lr: {"0.01": {train.optimizer.lr: 0.01}, "0.1": {train.optimizer.lr: 0.1}}
        sweep: {x: lr}
        """))


@pytest.mark.parametrize("extra, message", [
    ("grid: {train.seed: [0, 1]}\nsweep: {x: vars.s}\n",
     r"sweep\.yaml:\d+: sweep\.x: 'vars\.s' is not a grid axis; grid axes: train\.seed"),
    ("sweep: {x: vars.s}\n", "grid axes: none"),
    ("grid: {train.seed: [0, 1]}\nsweep: {y: train.seed}\n", "sweep.x: required"),
    ("grid: {train.seed: [0, 1]}\nsweep: {x: train.seed, y: train.seed}\n", "sweep.y: the same axis as sweep.x"),
    ("grid: {train.seed: [0, 1]}\nsweep: {x: train.seed, colour: red}\n",
     "sweep.colour: unknown key; valid keys here: x, y, metric, rows, eps"),
    ("grid: {method: {CE: {}, PC: {}}}\nsweep: {x: method}\n",
     "grid.method: a sweep axis needs numeric values, got 'CE'"),
    ("grid: {train.seed: [0, 1]}\nsweep: {x: train.seed, metric: loss}\n",
     "sweep.metric: unknown metric 'loss'; valid: accuracy, error_rate, mean_l2, median_l2, mean_linf"),
    ("grid: {train.seed: [0, 1]}\nsweep: {x: train.seed, rows: [BIM]}\n",
     "sweep.rows: no attack is labelled 'BIM'; labels: clean, FGSM, PGD"),
    ("grid: {train.seed: [0, 1]}\nsweep: {x: train.seed, rows: [PGD], eps: 0.1}\n",
     "sweep.eps: no plotted attack runs at eps 0.1; their budgets: 0.2"),
    ("grid: {train.seed: [0, 1], vars.k: [1, 2]}\nsweep: {x: train.seed, average: [vars.q]}\n",
     "sweep.average: 'vars.q' is not a grid axis besides the sweep's; valid: vars.k"),
    # a misspelt label under evaluate.overrides, or an unused variable, would give a flat plot
    ("grid: {evaluate.overrides.PDG.steps: [1, 2]}\nsweep: {x: evaluate.overrides.PDG.steps}\n",
     ("changes nothing: evaluate.overrides.PDG.steps=1 and evaluate.overrides.PDG.steps=2 give the same run "
      "(evaluate.overrides.PDG names no attack; use an attack's label, preset or name: FGSM, PGD, fgsm, pgd)")),
    ("grid: {vars.q: [1, 2]}\nsweep: {x: vars.q}\n", r"does any value use \$\{q\}"),
])
def test_sweep_block_errors_name_the_key_and_the_fix(tmp_path, extra, message):
    error = config_error(tmp_path, extra)
    assert message in error or __import__("re").search(message, error), error


def test_set_that_fixes_the_swept_key_is_caught(tmp_path):
    error = config_error(tmp_path, "grid: {train.seed: [0, 1]}\nsweep: {x: train.seed}\n", ["train.seed=3"])
    assert "grid axis train.seed changes nothing" in error and "--set" in error
    # an override keyed by the label wins over one keyed by the attack name, so sweeping the latter does nothing
    error = config_error(tmp_path, "grid: {evaluate.overrides.pgd.steps: [1, 2]}\n"
                                   "sweep: {x: evaluate.overrides.pgd.steps}\n", ["evaluate.overrides.PGD.steps=3"])
    assert "(evaluate.overrides.PGD also sets steps: an attack's label wins over its preset" in error


# -- values from the store, and plots ----------------------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory, mnist5k):
    """A 1-D eval-only sweep over PGD's steps, two seeds each: 2 models, 4 runs."""
    folder = tmp_path_factory.mktemp("swept")
    path = write(folder, """\
        grid:
          evaluate.overrides.PGD.steps: [1, 3]
          train.seed: [0, 1]
        sweep: {x: evaluate.overrides.PGD.steps}
        """)
    runner = ExperimentRunner(folder / "root", device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    experiment = load_experiment(path)
    outcomes = runner.run(experiment)
    assert all(o.status == "done" for o in outcomes)
    yield runner, experiment
    runner.store.close()


def test_collected_values_are_the_stores_evaluation_rows(swept):
    runner, experiment = swept
    store = runner.store
    sweep = collect_sweep(store, experiment.name, experiment.scale)
    assert {p.series for p in sweep.points} == {SeriesKey("", "clean", None), SeriesKey("", "FGSM", 0.1),
                                                SeriesKey("", "FGSM", 0.2), SeriesKey("", "PGD", 0.2)}
    assert sweep.xs() == [1.0, 3.0] and all(p.n == 2 for p in sweep.points)  # seeds averaged
    by_x = {1.0: [], 3.0: []}
    for cell in store.cells(experiment.name, experiment.scale):
        by_x[float(cell.cell["evaluate.overrides.PGD.steps"])].append(cell.run_id)
    for point in sweep.points:
        if point.series.row == "clean":
            stored = [100 * store.load_evaluation(r).clean_accuracy for r in by_x[point.x]]
        else:
            stored = [100 * row["accuracy"] for r in by_x[point.x] for row in store.evaluation_rows(r)
                      if row["name"] == point.series.row and np.isclose(row["eps"], point.series.eps)]
        assert len(stored) == 2
        assert point.mean == pytest.approx(np.mean(stored))
        assert point.std == pytest.approx(np.std(stored, ddof=1))
    # the eval-only axis trained one model per seed, shared by both step counts; a re-run redoes nothing
    assert len({store.get_run(r).train_hash for ids in by_x.values() for r in ids}) == 2
    assert {o.status for o in runner.run(experiment)} == {"reused"}


def test_report_includes_the_sweep(swept, tmp_path):
    runner, experiment = swept
    files = build_report(runner.store, experiment.name, tmp_path, scale=experiment.scale, log=lambda _: None)
    rows = list(csv.DictReader(files.sweep_csv.open()))
    assert rows and set(rows[0]) == {"group", "row", "eps", "evaluate.overrides.PGD.steps", "metric", "mean", "std",
                                     "n_runs"}
    line = tmp_path / f"{experiment.name}-{experiment.scale}-sweep.png"
    assert line in files.plots and line.read_bytes().startswith(PNG_SIGNATURE)
    markdown = files.markdown.read_text()
    assert "## Sweep: accuracy against steps" in markdown and f"]({line.name})" in markdown
    page = files.html.read_text()
    assert "Sweep: accuracy against steps" in page and files.sweep_csv.name in page
    assert page.count("data:image/png;base64,") == len(files.plots)


def synthetic_sweep(two_axes: bool) -> Sweep:
    rng = np.random.default_rng(0)
    sweep = Sweep("demo", "smoke", "vars.s", "vars.m" if two_axes else None, "accuracy", "s", "m", log_x=not two_axes)
    for row, eps in (("clean", None), ("PGD", 1.0), ("DeepFool", 1.0)):
        for x in ([1.0, 1.5, 2.0] if two_axes else [32, 128, 512, 2048]):
            for y in ([0.02, 0.06, 0.1] if two_axes else [None]):
                std = None if two_axes else float(rng.uniform(1, 3))
                sweep.points.append(SweepPoint(SeriesKey("", row, eps), x, y, float(rng.uniform(20, 90)), std, 2))
    return sweep


@pytest.mark.parametrize("plot, two_axes", [(plot_sweep_lines, False), (plot_sweep_heatmaps, True),
                                            (plot_sweep_surfaces, True)])
def test_plots_are_valid_pngs(tmp_path, plot, two_axes):
    path = plot(synthetic_sweep(two_axes), tmp_path / "sweep.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000


def test_a_missing_grid_point_is_left_blank(tmp_path):
    sweep = synthetic_sweep(True)
    sweep.points = [p for p in sweep.points if not (p.x == 2.0 and p.y == 0.1)]
    for plot in (plot_sweep_heatmaps, plot_sweep_surfaces):
        assert plot(sweep, tmp_path / f"{plot.__name__}.png").read_bytes().startswith(PNG_SIGNATURE)


# -- end to end --------------------------------------------------------------------------------------
def test_cli_sweeps_two_attack_parameters_on_one_trained_model(tmp_path, capsys):
    config = write(tmp_path, "grid: {}\n")
    root = tmp_path / "root"
    code = main(["sweep", str(config), "--over", "evaluate.overrides.PGD.steps=1,3",
                 "--over", "evaluate.overrides.PGD.step_size=0.02:0.08:2", "--root", str(root),
                 "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tiny-sweep-sweep-steps-step_size (base): accuracy over evaluate.overrides.PGD.steps x " in out
    assert "4 cells, 4 distinct runs, 1 distinct models" in out
    assert len(list((root / "models").iterdir())) == 1  # an eval-only sweep trains once
    reports = root / "reports"
    stem = "tiny-sweep-sweep-steps-step_size-base"
    for name in (f"{stem}-sweep.csv", f"{stem}-sweep-heatmap.png", f"{stem}-sweep-surface.png", f"{stem}.html"):
        assert (reports / name).exists(), name
        assert str(reports / name) in out
    rows = list(csv.DictReader((reports / f"{stem}-sweep.csv").open()))
    assert {(r["evaluate.overrides.PGD.steps"], r["evaluate.overrides.PGD.step_size"]) for r in rows} == {
        ("1", "0.02"), ("1", "0.08"), ("3", "0.02"), ("3", "0.08")}


def test_cli_sweep_without_axes_says_how_to_add_them(tmp_path, capsys):
    assert main(["sweep", str(write(tmp_path)), "--root", str(tmp_path)]) != 0
    assert "has no sweep: block; name the axes with --over" in capsys.readouterr().err
