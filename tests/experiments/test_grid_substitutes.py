"""Substitutes that are the grid's own models (``{grid: {method: X}}``): resolved to the referenced cell's
training config, refused when misspelt, and trained once in a real run that reports a transfer matrix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import robustloss.experiments.runner as runner_module
from robustloss.errors import ConfigError
from robustloss.experiments.runner import ExperimentRunner
from robustloss.experiments.schema import config_hash, load_experiment
from robustloss.report.experiment import build_report

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METHODS = ("CE", "Center", "MMC")

CONFIG = """\
name: tiny-matrix
train:
  dataset: mnist-5k
  model: lenet5
  recipe: [{loss: ce, epochs: 1}]
  max_train_samples: 128
  batch_size: 64
substitutes:
  CE: {grid: {method: CE}}
  Center: {grid: {method: Center}}
  MMC: {grid: {method: MMC}}
evaluate:
  n_test: 24
  batch_size: 24
  diagnostics: false
  attacks:
ATTACKS
grid:
  method:
    CE: {}
    Center: {train.recipe: [{loss: center, epochs: 1}]}
    MMC: {train.recipe: [{loss: mmc, epochs: 1}], train.optimizer: {name: adam, lr: 0.003}}
SEEDS
scales:
  smoke: {train.max_train_samples: 96}
"""
ATTACK = ("    - {attack: transfer, eps: [0.15, 0.3], label: PGD from NAME,\n"
          "       params: {substitute: '@NAME', method: pgd, method_params: {steps: 4, step_size: 0.1}}}\n")


def write(tmp_path: Path, seeds: bool = False, text: str | None = None) -> Path:
    attacks = "".join(ATTACK.replace("NAME", m) for m in METHODS).rstrip("\n")
    text = text or CONFIG.replace("ATTACKS", attacks).replace("SEEDS", "  train.seed: [0, 1]" if seeds else "")
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_grid_reference_is_the_referenced_cells_own_training_config(tmp_path):
    experiment = load_experiment(write(tmp_path, seeds=True), "smoke", ["train.batch_size=32"])
    cells = {(c.labels["method"], c.labels["train.seed"]): c for c in experiment.cells}
    assert len(cells) == 6
    for (method, seed), cell in cells.items():
        assert list(cell.substitutes) == list(METHODS)
        for name, substitute in cell.substitutes.items():
            # the same seed's model (the axes the reference does not name keep the cell's values)
            assert substitute == cells[(name, seed)].train
            assert config_hash(substitute) == cells[(name, seed)].train_hash
        # scale and --set reach the substitute as they reach the cell
        assert cell.substitutes["MMC"].max_train_samples == 96 and cell.substitutes["MMC"].batch_size == 32
        assert cell.substitutes["MMC"].optimizer.lr == 0.003 and cell.substitutes["CE"].optimizer.lr != 0.003
    assert cells[("CE", "0")].substitutes["CE"] != cells[("CE", "1")].substitutes["CE"]


@pytest.mark.parametrize("entry, message", [
    ("{grid: {methd: CE}}", "substitutes.CE.grid.methd: not an axis of the grid; axes: method"),
    ("{grid: {method: SCE}}", "'SCE' is not a value of the grid axis 'method'; values: CE, Center, MMC"),
    ("{grid: {method: CE}, model: cnn3}", "takes no other keys (got model)"),
    ("{grid: CE}", "substitutes.CE.grid: expected a mapping of grid axis to value"),
])
def test_a_wrong_grid_reference_is_refused_naming_the_key(tmp_path, entry, message):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("  CE: {grid: {method: CE}}", f"  CE: {entry}"))
    with pytest.raises(ConfigError, match="substitutes.CE") as err:
        load_experiment(path)
    assert message in str(err.value)


def test_set_on_a_grid_referenced_substitute_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="takes no other keys"):
        load_experiment(write(tmp_path), overrides=["substitutes.CE.model=cnn3"])


@pytest.mark.parametrize("scale", ["smoke", "demo", "paper"])
def test_mmc_fig4_substitutes_are_its_grid_models_shared_with_mmc_table1(scale):
    fig4 = load_experiment(CONFIGS / "mmc_fig4.yaml", scale)
    models = {c.labels["method"]: c.train_hash for c in fig4.cells}
    assert len(set(models.values())) == 6
    for cell in fig4.cells:
        assert {name: config_hash(s) for name, s in cell.substitutes.items()} == models
        transfer = [a for a in cell.evaluate.attacks if a.params.get("substitute")]
        assert sorted(a.params["substitute"][1:] for a in transfer) == sorted(list(models) * 2)  # PGD and MIM
    table1 = {c.labels["method"]: c.train_hash for c in load_experiment(CONFIGS / "mmc_table1.yaml", scale).cells}
    shared = [m for m in models if table1.get(m) == models[m]]
    assert shared == ["SCE", "Center loss", "MMC-10", "AT10-tar(SCE)", "AT10-tar(MMC-10)"]


def test_a_real_run_trains_each_model_once_and_reports_the_matrix(tmp_path, mnist5k, monkeypatch):
    trained: list[str] = []
    real_train = runner_module.train

    def counting_train(config, folder, **kwargs):
        trained.append(Path(folder).name)
        return real_train(config, folder, **kwargs)

    monkeypatch.setattr(runner_module, "train", counting_train)
    experiment = load_experiment(write(tmp_path), "smoke")
    runner = ExperimentRunner(tmp_path / "root", device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    outcomes = runner.run(experiment)
    assert [o.status for o in outcomes] == ["done"] * 3
    hashes = {c.labels["method"]: c.train_hash for c in experiment.cells}
    assert sorted(trained) == sorted(hashes.values())  # each model once: as a cell or as a substitute, not both
    assert sorted(p.name for p in (tmp_path / "root" / "models").iterdir()) == sorted(hashes.values())

    files = build_report(runner.store, "tiny-matrix", tmp_path / "report", scale="smoke", log=lambda _: None)
    run_of = {c.cell["method"]: c.run_id for c in runner.store.cells("tiny-matrix", "smoke")}
    low, high = _matrices(files.transfer_csv)
    for eps, matrix in ((0.15, low), (0.3, high)):
        assert list(matrix) == list(METHODS)  # rows: substitutes, in the grid's order
        for source, row in matrix.items():
            assert list(row) == list(METHODS)  # columns: targets
            for target, value in row.items():
                stored = next(r for r in runner.store.evaluation_rows(run_of[target])
                              if r["label"] == f"PGD from {source}" and r["eps"] == pytest.approx(eps))
                assert stored["params"]["substitute"] == str(runner.model_dir(experiment.cells[
                    METHODS.index(source)].train))
                assert value == pytest.approx(100 * stored["accuracy"], abs=1e-4)
    png = tmp_path / "report" / "tiny-matrix-smoke-transfer-matrix.png"
    assert png in files.plots and png.read_bytes()[:4] == b"\x89PNG"
    assert "## Transfer matrix" in files.markdown.read_text()
    runner.store.close()


def _matrices(csv_path: Path) -> list[dict[str, dict[str, float]]]:
    """The CSV's matrices, in order: substitute -> target -> accuracy."""
    import csv

    rows = list(csv.DictReader(csv_path.open()))
    out: dict[tuple, dict] = {}
    for row in rows:
        key = (row["section"], row["attack"], row["eps"])
        targets = {k: float(v) for k, v in row.items() if k not in ("section", "attack", "eps", "substitute")}
        out.setdefault(key, {})[row["substitute"]] = targets
    return list(out.values())
