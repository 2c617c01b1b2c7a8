"""The README's Python example and CLI set-up lines are real: run the example as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def python_block_under(heading: str) -> str:
    section = README.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def test_readme_opens_with_the_two_setup_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = python_block_under("Python example")
    exec(compile(example, str(README), "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert re.search(r"pgd eps=0.3 +accuracy \d+\.\d%", out)
    assert "PGD success rate" in out
    assert (tmp_path / "runs" / "example" / "model.pt").exists()


def test_evaluate_your_own_model_runs_on_a_user_module(monkeypatch, capsys, mnist5k, trained_lenet):
    """The one-call block, run as written on a plain nn.Module, with the suite's budgets shortened."""
    from torch import nn

    import robustloss.evaluate as evaluate_package

    class UserNet(nn.Module):  # no robustloss attributes: what a user brings
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    short = {"apgd-ce": {"n_iter": 5}, "apgd-t": {"n_iter": 5, "n_target_classes": 2},
             "fab-t": {"n_iter": 5, "n_target_classes": 2}, "square": {"n_queries": 20}}
    full = evaluate_package.standard_evaluation
    monkeypatch.setattr(evaluate_package, "standard_evaluation",
                        lambda *a, **k: full(*a, overrides=short, diagnostics=False, device="cpu", **k))
    x_test, y_test = mnist5k.test.batch(slice(0, 40))
    namespace = {"model": UserNet(trained_lenet).eval(), "x_test": x_test, "y_test": y_test}
    exec(compile(python_block_under("Evaluate your own model"), str(README), "exec"), namespace)
    report = namespace["report"]
    assert 0.0 <= report.robust_accuracy <= report.clean_accuracy
    assert "Robust accuracy" in capsys.readouterr().out
