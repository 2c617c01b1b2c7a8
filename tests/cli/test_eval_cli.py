"""`robustloss eval` on a model robustloss did not train, with --standard and --config, through run_evaluation."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from robustloss.cli import main
from robustloss.evaluate import Evaluation
from robustloss.evaluate import run as run_module

FAST = ["--param", "apgd-ce.n_iter=10", "--param", "apgd-t.n_iter=10", "--param", "apgd-t.n_target_classes=2",
        "--param", "fab-t.n_iter=10", "--param", "fab-t.n_target_classes=2", "--param", "square.n_queries=100"]


@pytest.fixture
def user_model(trained_lenet, tmp_path, monkeypatch):
    """An importable factory module and a safetensors file holding the trained LeNet-5's weights."""
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        from robustloss.models import create_model

        def lenet():
            return create_model("lenet5")

        def not_a_model():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "lenet.safetensors"
    save_file({k: v.contiguous() for k, v in trained_lenet.state_dict().items()}, str(weights))
    torch.save(trained_lenet.state_dict(), tmp_path / "lenet.pt")
    return weights


def test_standard_evaluation_of_a_user_model_from_the_command_line(user_model, tmp_path, capsys, monkeypatch):
    calls = []
    real = run_module.run_evaluation
    monkeypatch.setattr(run_module, "run_evaluation", lambda *a, **k: calls.append(1) or real(*a, **k))
    def argv(weights, out):
        return ["eval", "--model", "my_models:lenet", "--weights", str(weights), "--dataset", "mnist-5k",
                "--standard", "--eps", "0.15", "--n-test", "60", "--out", str(out), "--device", "cpu",
                "--no-progress", *FAST]

    assert main(argv(user_model, tmp_path / "out")) == 0
    assert calls == [1]  # the CLI takes the one path
    text = capsys.readouterr().out
    assert "Robust accuracy" in text and "| square |" in text and "Gradient-masking diagnostics" in text
    evaluation = Evaluation.load(tmp_path / "out" / "records.npz")
    assert [r.name for r in evaluation.records][:4] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert evaluation.meta["mode"] == "worst-case" and evaluation.meta["standard"] == "standard"
    # the same weights as a torch state dict give the same records (same seed)
    assert main(argv(tmp_path / "lenet.pt", tmp_path / "again")) == 0
    again = Evaluation.load(tmp_path / "again" / "records.npz")
    assert all(np.array_equal(a.adv_pred, b.adv_pred) for a, b in zip(again.records, evaluation.records))


def test_eval_reads_a_config_file_and_flags_override_it(user_model, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text("evaluate:\n  attacks:\n    - {attack: pgd, eps: [0.1], params: {steps: 5}}\n"
                      "  n_test: 30\n  diagnostics: false\n  seed: 3\n")
    out = tmp_path / "out"
    assert main(["eval", "--model", "my_models:lenet", "--weights", str(user_model), "--dataset", "mnist-5k",
                 "--config", str(config), "--n-test", "20", "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    evaluation = Evaluation.load(out / "records.npz")
    assert evaluation.n == 20 and evaluation.meta["seed"] == 3
    assert [(r.attack, r.eps, r.params["steps"]) for r in evaluation.records] == [("pgd", 0.1, 5)]


@pytest.mark.parametrize("extra, message", [
    (["--model", "my_models:nope", "--dataset", "mnist-5k"], "has no callable 'nope'"),
    (["--model", "my_models:not_a_model", "--dataset", "mnist-5k"], "not an nn.Module"),
    (["--model", "no_such_module:f", "--dataset", "mnist-5k"], "cannot import 'no_such_module'"),
    (["--model", "my_models", "--dataset", "mnist-5k"], "expects package.module:factory"),
    (["--model", "my_models:lenet"], "--model needs --dataset"),
    ([], "name a run folder"),
    (["--model", "my_models:lenet", "--dataset", "mnist-5k", "--weights", "missing.safetensors"], "no weights file"),
    (["--model", "my_models:lenet", "--dataset", "mnist-5k", "--standard", "--attacks", "pgd"], "drop --attacks"),
    (["--model", "my_models:lenet", "--dataset", "mnist-5k", "--standard", "--param", "sqare.n_queries=5"],
     "parameters given for sqare"),
    (["--model", "my_models:lenet", "--dataset", "mnist-5k", "--standard", "--param", "square.n_queries=-5"],
     "square:"),
    (["--model", "my_models:lenet", "--dataset", "mnist-5k", "--eps", "abc"], "--eps: expected"),
    (["--model", "my_models:lenet", "--dataset", "mnist-5k", "--eps", "-0.1"], "--eps: budgets must be"),
    (["--model", "my_models:lenet", "--dataset", "mnist-5k", "--eps", "8/0"], "--eps: expected"),
    (["--model", "my_models:lenet", "--dataset", "mnist-5k", "--n-test", "0"], "--n-test must be"),
])
def test_bad_eval_input_gets_one_clear_line(user_model, extra, message, capsys):
    assert main(["eval", *extra, "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_weights_that_do_not_fit_are_refused(user_model, tmp_path, capsys):
    save_file({"head.weight": torch.zeros(3, 3)}, str(tmp_path / "bad.safetensors"))
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    for name, message in (("bad.safetensors", "does not fit"), ("garbage.safetensors", "cannot read")):
        assert main(["eval", "--model", "my_models:lenet", "--weights", str(tmp_path / name), "--dataset",
                     "mnist-5k", "--device", "cpu"]) == 1
        assert message in capsys.readouterr().err


def test_eps_accepts_fractions_of_the_8_bit_range():
    from robustloss.cli.eval import _eps_list

    assert _eps_list("8/255, 0.1,1e-2,none") == [8 / 255, 0.1, 0.01, None]
