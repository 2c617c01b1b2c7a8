"""Everyday use: shipped experiments by name, a version, quiet logs off a terminal, the same objective
default everywhere, paper numbers only when asked, budgets by the dataset's convention, and attack
parameters listed with their defaults. The library itself never prints."""

from __future__ import annotations

import ast
import inspect
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import robustloss
from robustloss.attacks import ATTACKS, create_attack
from robustloss.cli import main
from robustloss.cli.console import ConsoleHandler
from robustloss.cli.eval import conventional_eps
from robustloss.errors import ConfigError
from robustloss.evaluate import AttackSpec, EvaluateConfig, evaluate
from robustloss.experiments.schema import load_experiment
from robustloss.experiments.shipped import find_experiment, shipped_configs
from robustloss.progress import show_progress

SOURCE = Path(robustloss.__file__).parent


def test_version_is_the_installed_metadata_and_the_cli_prints_it(capsys):
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", robustloss.__version__)
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"robustloss {robustloss.__version__}"


def test_shipped_experiments_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = {c.name for c in shipped_configs()}
    assert {"pc-demo", "pc-table1", "mmc-table1", "isce-table1"} <= names
    for spelling in ("pc-table1", "pc_table1", "pc_table1.yaml"):
        assert find_experiment(spelling) == SOURCE / "configs" / "pc_table1.yaml"
    experiment = load_experiment("pc-table1", "smoke")
    assert experiment.name == "pc-table1" and experiment.published_path().is_file()
    with pytest.raises(ConfigError, match="no shipped experiment of that name.*pc-table1"):
        find_experiment("pc-table9")
    (tmp_path / "pc-table1").write_text("name: mine\n")  # a user's own file wins over a shipped name
    assert find_experiment("pc-table1") == Path("pc-table1")


def test_configs_command_lists_each_shipped_experiment_with_its_title(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for config in shipped_configs():
        assert re.search(rf"^  {re.escape(config.name)} +{re.escape(config.title)}$", out, re.MULTILINE)


def test_progress_bars_only_on_a_terminal_unless_asked(monkeypatch):
    monkeypatch.delenv("ROBUSTLOSS_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert show_progress() is False and show_progress(True) is True
    monkeypatch.setenv("ROBUSTLOSS_PROGRESS", "1")
    assert show_progress() is True and show_progress(False) is False
    monkeypatch.setenv("ROBUSTLOSS_PROGRESS", "off")
    assert show_progress() is False


def _library_prints() -> list[str]:
    """Every call of print() in the package outside the command line."""
    found = []
    for path in SOURCE.rglob("*.py"):
        if path.relative_to(SOURCE).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{path.relative_to(SOURCE)}:{node.lineno}")
            if isinstance(node, ast.Name) and node.id == "print" and isinstance(node.ctx, ast.Load):
                found.append(f"{path.relative_to(SOURCE)}:{node.lineno} (print passed as a value)")
    return found


def test_the_library_never_prints():
    assert _library_prints() == []


def test_evaluate_is_silent_by_default_and_logs_through_the_robustloss_logger(trained_lenet, mnist5k, capsys,
                                                                                caplog, monkeypatch):
    x, y = mnist5k.test.batch(slice(0, 40))
    library = logging.getLogger("robustloss")  # as a library user has it: no console (another test's main() added one)
    monkeypatch.setattr(library, "handlers", [h for h in library.handlers if not isinstance(h, ConsoleHandler)])
    with caplog.at_level(logging.INFO, logger="robustloss"):
        evaluation = evaluate(trained_lenet, (x, y), [AttackSpec("fgsm", [0.1])], progress=None)
    assert capsys.readouterr().out == ""
    assert evaluation.records[0].objective == "ce"  # adaptive resolved for a CE-trained model
    assert all(r.name.startswith("robustloss") for r in caplog.records)


def test_the_console_handler_prints_info_to_stdout_and_warnings_to_stderr(capsys):
    logger = logging.getLogger("robustloss.test-console")
    logger.propagate = False  # only this handler: the package logger may hold the CLI's console already
    handler = ConsoleHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("one line")
        logger.warning("careful")
    finally:
        logger.removeHandler(handler)
    captured = capsys.readouterr()
    assert captured.out == "one line\n" and captured.err == "warning: careful\n"


def test_the_objective_default_is_adaptive_everywhere():
    assert EvaluateConfig().objective == "adaptive"
    assert inspect.signature(evaluate).parameters["objective"].default == "adaptive"
    spec = EvaluateConfig(attacks=[_spec("pgd")]).plan()[0]
    assert spec.params["objective"] == "adaptive"
    from robustloss.cli import build_parser

    args = build_parser().parse_args(["eval", "runs/x"])
    assert args.objective is None  # None: the config's default (adaptive) stands
    from robustloss.cli.eval import eval_config

    assert eval_config(args).plan()[0].params["objective"] == "adaptive"


def _spec(name):
    return AttackSpec(name, [0.1], {"steps": 2, "step_size": 0.05})


def test_adaptive_fits_the_head_and_falls_back_to_the_margin_for_unknown_models(trained_lenet):
    from robustloss.attacks.objectives import resolve_objective

    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    assert resolve_objective("adaptive", trained_lenet) == "ce"
    assert resolve_objective("adaptive", plain) == "cw"


def test_eval_budgets_follow_the_dataset_convention():
    assert conventional_eps("mnist-5k") == "0.1,0.2,0.3"
    assert conventional_eps("fashion-mnist") == "0.1,0.2,0.3"
    assert conventional_eps("cifar10") == "8/255" and conventional_eps("svhn") == "8/255"
    assert conventional_eps("cifar10", "l2") == "0.5" and conventional_eps("mnist", "l2") == "2.0"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--dataset", "mnist-5k", "--model", "lenet5", "--loss", "ce", "--epochs", "1",
                 "--max-train-samples", "300", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    return out


def test_eval_shows_paper_numbers_only_when_asked(tiny_run, tmp_path):
    base = ["eval", str(tiny_run), "--attacks", "fgsm", "--steps", "1", "--n-test", "20", "--device", "cpu",
            "--no-progress", "--no-cache"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    plain = (tmp_path / "plain" / "results.md").read_text()
    assert "| Attack | ε | CE |" in plain and " paper |" not in plain and "Δ" not in plain
    assert main([*base, "--out", str(tmp_path / "paper"), "--compare", "pc-table1", "--eps", "0.1"]) == 0
    assert "paper" in (tmp_path / "paper" / "results.md").read_text()


def test_attacks_lists_every_parameter_with_its_default(capsys):
    assert main(["attacks"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  pgd +norm=linf .*steps=.*random_start=True", out, re.MULTILINE)
    assert re.search(r"^  cw +norm=l2 .*binary_search_steps=9, initial_const=0.01, steps=100", out, re.MULTILINE)
    for name in ATTACKS.names():
        assert re.search(rf"^  {re.escape(name)} ", out, re.MULTILINE), name
    create_attack("pgd", eps=0.1, steps=1, step_size=0.1)  # the listing's names are the constructor's


def test_off_a_terminal_the_cli_logs_lines_not_progress_bars(tmp_path):
    result = subprocess.run([sys.executable, "-m", "robustloss", "train", "--dataset", "mnist-5k", "--model",
                             "lenet5", "--loss", "ce", "--epochs", "2", "--max-train-samples", "300", "--out",
                             str(tmp_path / "r"), "--device", "cpu"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH":
                                                                 str(SOURCE.parent)})
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr  # no bar redraws
    assert "epoch 1/2" in result.stdout and "epoch 2/2" in result.stdout  # one line per finished epoch


def test_help_text_has_no_raw_markup():
    from robustloss.cli import build_parser

    parser = build_parser()
    texts = [parser.format_help()]
    for action in parser._subparsers._group_actions:  # every command's own help
        texts += [command.format_help() for command in action.choices.values()]
    assert not [t for t in texts if "``" in t]


def test_long_runs_log_every_fifth_epoch_and_phase_ends_off_a_terminal(monkeypatch):
    from robustloss.train import Phase, TrainConfig
    from robustloss.train.trainer import _logs_epoch

    monkeypatch.delenv("ROBUSTLOSS_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    config = TrainConfig(recipe=[Phase("ce", 50), Phase("pc", 50)])
    logged = [e + 1 for e in range(100) if _logs_epoch(e, config, None)]
    assert logged == [1] + list(range(5, 51, 5)) + [51] + list(range(55, 101, 5))
    assert all(_logs_epoch(e, config, True) for e in range(100))  # a terminal (or --progress): every epoch
    short = TrainConfig(recipe=[Phase("ce", 20)])
    assert all(_logs_epoch(e, short, None) for e in range(20))


def test_the_demo_prints_the_findings_and_leaves_the_tables_to_the_report():
    from robustloss.demo import findings_section

    report = "# Title\n\n## Findings\n\nPC-LC is more robust than CE: reproduced\n\n## Results\n\n| big table |\n"
    printed = findings_section(report)
    assert printed.startswith("# Title\n\n## Findings") and "reproduced" in printed
    assert "big table" not in printed and "in the report below" in printed


def test_a_run_trained_exactly_like_the_papers_model_is_compared_without_asking():
    import dataclasses

    from robustloss.cli.eval import paper_table_of

    cell = next(c for c in load_experiment("pc-table1", "paper").cells if c.train.dataset == "fashion-mnist")
    assert paper_table_of(cell.train) == "pc-table1"
    assert paper_table_of(dataclasses.replace(cell.train, seed=cell.train.seed + 1)) is None
    assert paper_table_of(dataclasses.replace(cell.train, batch_size=64)) is None
