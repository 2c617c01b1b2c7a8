"""Every shipped config validates at every scale, carries the paper's numbers, and its smoke preset runs;
the figure configs' smoke runs write their figures."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from robustloss.experiments.runner import ExperimentRunner
from robustloss.experiments.schema import SCALES, load_experiment, read_published
from robustloss.report.experiment import build_report

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
PAPER_TABLES = {"pc_table1", "pc_table2", "pc_table3", "pc_table4", "pc_table5", "mmc_table1", "mmc_table2",
                "mmc_table3", "mmc_table4", "mmc_table5", *(f"isce_table{i}" for i in range(1, 8))}


def test_every_paper_table_has_a_config():
    assert PAPER_TABLES <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_at_every_scale_and_has_published_numbers(path):
    for scale in SCALES:
        experiment = load_experiment(path, scale)
        assert experiment.cells, f"{path.name} {scale}: no cells"
        for cell in experiment.cells:
            assert cell.evaluate.attacks, f"{path.name} {scale} {cell.name}: no attacks"
    experiment = load_experiment(path, "paper")
    if experiment.file.sweep is not None:
        return  # a sweep (a paper's figure, or a table as a curve) is plotted, not compared cell by cell
    if path.stem not in PAPER_TABLES and experiment.file.published is None:
        return  # our own comparison (e.g. at_recipes): no paper numbers to carry
    published = read_published(experiment.published_path())
    assert published, f"{path.name}: no published numbers"
    columns = experiment.file.report.columns
    methods = {cell.labels.get(columns) for cell in experiment.cells}
    # Every method we run that the paper reports must match the CSV's spelling.
    assert methods & {row["method"] for row in published}, f"{path.name}: no published method matches {methods}"


@pytest.fixture(scope="module")
def smoke_runner(tmp_path_factory, mnist5k):
    """One results folder for all smoke runs: configs that train the same model share it."""
    runner = ExperimentRunner(tmp_path_factory.mktemp("smoke"), device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    yield runner
    runner.store.close()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_smoke_preset_runs_and_reports(path, smoke_runner, tmp_path):
    experiment = load_experiment(path, "smoke")
    outcomes = smoke_runner.run(experiment)
    failed = [f"{o.cell.name}: {o.error}" for o in outcomes if o.status == "failed"]
    assert not failed, failed
    files = build_report(smoke_runner.store, experiment.name, tmp_path, scale="smoke", log=lambda _: None)
    assert files.html.exists() and files.table.sections
    ours = [c.mean for s in files.table.sections for r in s.rows for c in r.cells.values() if c.mean is not None]
    assert ours, "the report shows none of our numbers"


# The figure configs: the smoke run writes the figure (the analysis's PNG and CSVs) into the store.
FIGURES = {"mmc_fig3a": ("training-time", ["SCE", "Center loss", "MMC-10", "AT10-tar(SCE)", "AT10-tar(MMC-10)"]),
           "pc_fig3": ("embedding", ["CE", "PC-LC"])}


@pytest.mark.parametrize("stem", sorted(FIGURES))
def test_figure_config_smoke_run_writes_its_figure(stem, smoke_runner):
    import matplotlib.image

    experiment = load_experiment(Path(__file__).resolve().parents[2] / "configs" / f"{stem}.yaml", "smoke")
    smoke_runner.run(experiment)  # reuses the parametrized smoke run above when it ran first
    assert smoke_runner.analysis_failures == []
    name, models = FIGURES[stem]
    (row,) = smoke_runner.store.analyses(experiment=experiment.name, scale="smoke")
    assert row.name == name and [r["model"] for r in row.summary] == models
    files = [smoke_runner.root / f for f in row.files]
    assert all(f.exists() and f.stat().st_size > 0 for f in files)
    (png,) = [f for f in files if f.suffix == ".png"]
    height, width = matplotlib.image.imread(png).shape[:2]
    if stem == "pc_fig3":  # the paper's four panels: (a, b) CE, (c, d) PC-LC, clean | clean + FGSM
        assert row.params["attack"] == "fgsm" and row.params["eps"] == 0.3 and row.params["clean_panels"]
        assert 0.8 < width / height < 1.3, "two rows of two panels"
    else:  # times relative to SCE; cumulative seconds are the running sums of each model's metrics.csv
        assert row.summary[0]["time / SCE"] == 1.0 and width > 1.8 * height
        cells = {c.labels["method"]: c for c in experiment.cells}
        with open(next(f for f in files if f.name.endswith("training-time.csv")), newline="") as f:
            points = [p for p in csv.DictReader(f) if p["model"] == "MMC-10"]
        with open(smoke_runner.model_dir(cells["MMC-10"].train) / "metrics.csv", newline="") as f:
            seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
        assert [float(p["cumulative_seconds"]) for p in points] == pytest.approx(
            [sum(seconds[:k + 1]) for k in range(len(seconds))], abs=1e-4)
