"""An experiment's ``analyses:`` block: validated at load time, run after the grid into the
store (once), and shown in the experiment's report."""

from __future__ import annotations

import textwrap

import pytest

from robustloss.errors import ConfigError
from robustloss.experiments.analyses import model_labels
from robustloss.experiments.runner import ExperimentRunner
from robustloss.experiments.schema import load_experiment
from robustloss.report.experiment import build_report

CONFIG = """\
name: tiny-analyses
train:
  dataset: mnist-5k
  model: lenet5
  recipe: [{loss: ce, epochs: 2}]
  max_train_samples: 500
  batch_size: 100
evaluate:
  n_test: 40
  diagnostics: false
  attacks:
    - {attack: fgsm, eps: [0.1], label: FGSM}
grid:
  method:
    CE: {}
    PC-LC: {train.recipe: [{loss: ce, epochs: 1}, {loss: pc, epochs: 1}]}
analyses:
  - {name: gap}
  - {name: rank, params: {attacks: [fgsm], eps_step: 0.05, eps_max: 0.2}, n_test: 60}
  - {name: gap, models: {method: [PC-LC]}, n_test: 50}
"""


def write(tmp_path, text: str = CONFIG):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return path


BAD_ENTRIES = [
    ("- {name: spectrum}", r"analyses\[0\].name: unknown analysis 'spectrum'; valid: embedding, features, gap, rank"),
    ("- {name: gap, params: {bins: 3}}", r"analyses\[0\].params.bins: unknown parameter of analysis 'gap'"),
    ("- {name: gap, models: {loss: [CE]}}", r"analyses\[0\].models.loss: not a grid axis; grid axes: method"),
    ("- {name: gap, models: {method: [GCE]}}", r"analyses\[0\].models.method: no cell has method=GCE; values: CE, PC-LC"),
    ("- {name: gap, n_test: 0}", r"n_test must be >= 1"),
]


@pytest.mark.parametrize("entry, message", BAD_ENTRIES, ids=[e for e, _ in BAD_ENTRIES])
def test_bad_entries_are_refused_at_load_time(entry, message, tmp_path):
    text = CONFIG.replace("  - {name: gap}\n", f"  {entry}\n", 1)
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, text), None)


def test_labels_keep_only_the_axes_that_tell_models_apart(tmp_path):
    experiment = load_experiment(write(tmp_path), None)
    assert model_labels(experiment.cells) == ["CE", "PC-LC"]


def test_runner_computes_the_analyses_once_and_the_report_shows_them(tmp_path, mnist5k):
    experiment = load_experiment(write(tmp_path), None)
    logs: list[str] = []
    runner = ExperimentRunner(tmp_path / "root", device="cpu", progress=False, log=logs.append)
    runner._data["mnist-5k"] = mnist5k
    runner.run(experiment)
    assert runner.analysis_failures == []
    rows = runner.store.analyses(experiment="tiny-analyses", scale="base")
    assert [r.name for r in rows] == ["gap", "rank", "gap"]
    assert list(rows[0].models) == ["CE", "PC-LC"] and list(rows[2].models) == ["PC-LC"]
    assert rows[0].summary[0]["n"] == 10000 or rows[0].summary[0]["n"] == len(mnist5k.test)
    assert rows[1].summary[0]["model"] == "CE" and rows[1].params["n_test"] == 60
    assert rows[2].summary[0]["n"] == 50
    for row in rows:
        for f in row.files:
            path = tmp_path / "root" / f
            assert path.exists() and path.stat().st_size > 0
            if path.suffix == ".png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000

    logs.clear()
    runner.run(experiment)  # everything done before: nothing is recomputed
    assert sum("done before; reusing it" in line for line in logs) == 3
    assert len(runner.store.analyses()) == 3

    files = build_report(runner.store, "tiny-analyses", tmp_path / "report", log=lambda _: None)
    markdown = files.markdown.read_text()
    assert "## Analyses" in markdown and "Misclassification rank" in markdown
    assert "../root/reports/analysis/tiny-analyses-base-1-rank.png" in markdown
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") >= 3 + 3  # the report's own plots and the analyses'
    assert any(p.name.endswith("-rank.png") for p in files.plots)


def test_analyze_on_store_models_lands_in_the_experiments_report(tmp_path, mnist5k, capsys):
    from robustloss.cli import main

    text = CONFIG.split("analyses:")[0]  # no analyses block: only the hand-run one below
    experiment = load_experiment(write(tmp_path, text), None)
    root = tmp_path / "root"
    runner = ExperimentRunner(root, device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    runner.run(experiment)
    ce, pc = (root / "models" / cell.train_hash for cell in experiment.cells)
    assert main(["analyze", "gap", str(ce), str(pc), "--n-test", "30", "--device", "cpu"]) == 0
    # By run id in the store at --root, too.
    assert main(["analyze", "rank", "2", "--root", str(root), "--attacks", "fgsm", "--eps-step", "0.1",
                 "--eps-max", "0.2", "--n-test", "30", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "CE: mean gap" in printed and "PC-LC (fgsm)" in printed
    rows = runner.store.analyses()
    assert [(r.name, list(r.models), r.experiment) for r in rows] == [("gap", ["CE", "PC-LC"], ""),
                                                                      ("rank", ["PC-LC"], "")]
    assert all((root / f).exists() and f.startswith("reports/analysis/") for r in rows for f in r.files)
    files = build_report(runner.store, "tiny-analyses", root / "reports", log=lambda _: None)
    markdown = files.markdown.read_text()
    assert "Probability gap" in markdown and "Misclassification rank" in markdown
    assert "(analysis/" in markdown  # linked relative to the report folder


def test_analyze_explains_a_bad_run_reference(tmp_path, capsys):
    from robustloss.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["analyze", "gap", str(tmp_path / "empty")]) == 1
    assert "no model.pt in this folder" in capsys.readouterr().err
    assert main(["analyze", "gap", "abcd1234", "--root", str(tmp_path)]) == 1
    assert "no results store at" in capsys.readouterr().err
