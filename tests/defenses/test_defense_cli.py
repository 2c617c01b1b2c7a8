"""`robustloss eval --defense`: the model is attacked behind the defence, recorded as random,
and the diagnostics ask for EOT; a defence in an experiment also records every prediction over 10 redraws."""

from __future__ import annotations

from robustloss.cli import main
from robustloss.evaluate.records import Evaluation


def test_eval_behind_the_randomization_defence_warns_without_eot(cnn3_substitute, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(cnn3_substitute), "--attacks", "pgd", "--eps", "0.1", "--steps", "3", "--step-size", "0.04",
                 "--n-test", "40", "--defense", "random-resize-pad", "--defense-param", "draws=1", "--diagnostics",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    evaluation = Evaluation.load(out / "records.npz")
    assert evaluation.meta["stochastic"] is True
    diagnostics = (out / "diagnostics.md").read_text()
    assert "| 9 |" in diagnostics and "eot=10 or more" in diagnostics and "**WARN**" in diagnostics.split("| 9 |")[1]


def test_eval_defense_errors_are_clear(cnn3_substitute, tmp_path, capsys):
    base = ["eval", str(cnn3_substitute), "--attacks", "fgsm", "--eps", "0.1", "--n-test", "10", "--out", str(tmp_path)]
    assert main([*base, "--defense", "jpeg"]) == 1
    assert "valid defense names: random-resize-pad" in capsys.readouterr().err
    assert main([*base, "--defense-param", "draws=2"]) == 1
    assert "--defense-param needs --defense NAME" in capsys.readouterr().err
    assert main([*base, "--redraws", "-1"]) == 1
    assert "--redraws must be an integer >= 0" in capsys.readouterr().err


def test_experiment_cell_behind_a_defence_records_the_spread_over_draws(tmp_path, mnist5k):
    from robustloss.experiments.runner import ExperimentRunner
    from robustloss.experiments.schema import load_experiment

    config = tmp_path / "rnd.yaml"
    config.write_text("""\
name: rnd
train: {dataset: mnist-5k, model: lenet5, recipe: [{loss: ce, epochs: 1}], max_train_samples: 500}
evaluate:
  n_test: 40
  diagnostics: false
  attacks: [{attack: fgsm, eps: [0.1], label: FGSM}]
grid:
  method:
    SCE: {}
    Random: {evaluate.defense: {name: random-resize-pad}}
""")
    runner = ExperimentRunner(tmp_path / "root", device="cpu", progress=False, log=lambda _: None)
    runner._data["mnist-5k"] = mnist5k
    runner.run(load_experiment(config, None))
    sce, random = (runner.store.load_evaluation(c.run_id) for c in runner.store.cells("rnd"))
    assert sce.meta["stochastic"] is False and sce.clean_redraw_pred is None
    assert sce.accuracy_over_draws() is None and sce.records[0].redraw_pred is None
    assert random.meta["stochastic"] is True and random.meta["redraws"] == 10
    clean = random.accuracy_over_draws()
    assert clean.draws == 10 and 0 < clean.std < 0.2 and abs(clean.mean - random.clean_accuracy) < 0.2
    fgsm = random.records[0]
    assert fgsm.redraw_pred.shape == (10, 40)
    assert (fgsm.redraw_pred[:, ~fgsm.attacked] == -1).all()  # skipped samples stay skipped in every draw
    over_draws = random.accuracy_over_draws(fgsm)
    # hand check of the per-draw accuracy: clean-correct and still correct in that draw
    expected = [float((random.clean_correct & (draw == random.labels)).mean()) for draw in fgsm.redraw_pred]
    assert over_draws.per_draw == tuple(expected) and over_draws.draws == 10
    assert len({r.train_hash for r in runner.store.runs()}) == 1  # the defended row shares the SCE model
