"""The bad-input table: every kind of wrong command line or config file gets one actionable line.

Each case runs the real command line in a subprocess (``python -m robustloss ...``) inside a copy of a
small finished experiment: a results store, a trained model folder and a run folder. It must exit
non-zero (1 for robustloss's own errors, 2 for argparse's), print no traceback, name the offending
value in its error line, and leave every file of the folder exactly as it was, with nothing added.
All cases fail during argument or config validation, before any training.

Below the table: full-disk failures (in process, with a writer that raises ENOSPC), and the number
spellings that must be accepted (1e-3, .5, 8/255, inf).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from robustloss.cli import build_parser, main
from robustloss.cli.eval import eval_config
from robustloss.config import parse_number, read_yaml, read_yaml_value
from robustloss.errors import ConfigError
from robustloss.experiments.store import ResultsStore

# The tiny experiment, one flow-style line per top-level block, so a case can swap a block.
BLOCKS = {
    "name": "tiny",
    "train": "{dataset: mnist-5k, model: lenet5, recipe: [{loss: ce, epochs: 1}], max_train_samples: 100, "
             "batch_size: 50, optimizer: {lr: 1e-3, weight_decay: 5e-4}}",
    "evaluate": "{n_test: 10, batch_size: 10, diagnostics: false, attacks: [{attack: fgsm, eps: [8/255, .1], "
                "label: FGSM}]}",
    "grid": "{method: {CE: {}}}",
}


def experiment_file(**changes: str) -> str:
    """The tiny experiment with top-level blocks replaced or added (a YAML snippet per key)."""
    return "".join(f"{key}: {value}\n" for key, value in (BLOCKS | changes).items())


EXPERIMENT = experiment_file()
ROOT = "results"  # the finished experiment's folder inside each case's working folder
ENV = {**os.environ, "ROBUSTLOSS_SYSTEM_DATA": ""}  # as tests/conftest.py: only embedded data is seen


@dataclass
class Case:
    argv: list[str]
    expect: str  # text the error line must contain: the offending value (and often the fix)
    files: dict[str, str] = field(default_factory=dict)  # written into the working folder first
    code: int = 1


DRY = ["--dry-run", "--root", ROOT]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: 'cuda' is a valid device")

CASES = {
    # -- devices ------------------------------------------------------------------------------------
    "device-cuda-on-cpu": pytest.param(Case(["eval", "{run}", "--device", "cuda"], "'cuda'"), marks=NO_CUDA),
    "device-tpu9": Case(["eval", "{run}", "--device", "tpu9"], "--device 'tpu9': not a device name"),
    "device-cuda-index": Case(["train", "--recipe", "ce:1", "--out", "new", "--device", "cuda:99"], "'cuda:99'"),
    "device-run": Case(["run", "tiny.yaml", "--device", "tpu9", *DRY], "'tpu9'", {"tiny.yaml": EXPERIMENT}),
    # -- eval numbers and names ---------------------------------------------------------------------
    "eval-eps-negative": Case(["eval", "{run}", "--eps=-0.1"], "got -0.1"),
    "eval-eps-word": Case(["eval", "{run}", "--eps", "abc"], "got 'abc'"),
    "eval-eps-empty-item": Case(["eval", "{run}", "--eps", "0.1,,0.2"], "(an empty budget)"),
    "eval-eps-zero-denominator": Case(["eval", "{run}", "--eps", "8/0"], "got '8/0'"),
    "eval-linf-eps-above-1": Case(["eval", "{run}", "--attacks", "fgsm", "--eps", "8"], "L-inf eps 8 is above 1"),
    "eval-standard-eps-above-1": Case(["eval", "{run}", "--standard", "--eps", "8/255,16"], "L-inf eps 16"),
    "eval-n-test-zero": Case(["eval", "{run}", "--n-test", "0"], "--n-test must be an integer >= 1 or null, got 0"),
    "eval-n-test-word": Case(["eval", "{run}", "--n-test", "ten"], "invalid int value: 'ten'", code=2),
    "eval-batch-size-zero": Case(["eval", "{run}", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    "eval-redraws-negative": Case(["eval", "{run}", "--redraws", "-1"], "--redraws must be an integer >= 0"),
    "eval-unknown-attack": Case(["eval", "{run}", "--attacks", "pgdx"], "unknown attack 'pgdx'"),
    "eval-no-attack": Case(["eval", "{run}", "--attacks", ","], "--attacks ',': names no attack"),
    "eval-param-word": Case(["eval", "{run}", "--attacks", "pgd", "--param", "pgd.steps=abc"],
                            "steps expects a number (default 40), got 'abc'"),
    "eval-param-negative": Case(["eval", "{run}", "--attacks", "pgd", "--param", "pgd.steps=-3"], "got -3"),
    "eval-param-form": Case(["eval", "{run}", "--param", "steps=3"], "got 'steps=3'"),
    "eval-unknown-defense": Case(["eval", "{run}", "--defense", "blur"], "unknown defense 'blur'"),
    "eval-missing-run": Case(["eval", "no-such-run"], "no-such-run"),
    "eval-config-missing": Case(["eval", "{run}", "--config", "absent.yaml"], "absent.yaml: no such file"),
    "eval-config-malformed": Case(["eval", "{run}", "--config", "ev.yaml"], "ev.yaml: not valid YAML: line 2",
                                  {"ev.yaml": "attacks: [{attack: fgsm, eps: [0.1]}\n"}),
    "eval-config-unknown-key": Case(["eval", "{run}", "--config", "ev.yaml"], "ev.yaml: evaluate.atacks: unknown key",
                                    {"ev.yaml": "atacks: [{attack: fgsm}]\n"}),
    "eval-config-no-attacks": Case(["eval", "{run}", "--config", "ev.yaml"], "ev.yaml: attacks: is an empty list",
                                   {"ev.yaml": "attacks: []\n"}),
    "eval-config-empty-eps": Case(["eval", "{run}", "--config", "ev.yaml"], "eps is an empty list",
                                  {"ev.yaml": "attacks: [{attack: fgsm, eps: []}]\n"}),
    # -- train --------------------------------------------------------------------------------------
    "train-loss-param-word": Case(["train", "--recipe", "pc:1", "--loss-param", "pc.xi=abc", "--out", "new"],
                                  "xi expects a number (default 0.995), got 'abc'"),
    "train-loss-param-form": Case(["train", "--recipe", "pc:1", "--loss-param", "xi=1", "--out", "new"], "'xi=1'"),
    "train-recipe-empty-phase": Case(["train", "--recipe", "ce:2,,pc:1", "--out", "new"],
                                     "--recipe 'ce:2,,pc:1': phase 2 of 3 is empty"),
    "train-recipe-no-epochs": Case(["train", "--recipe", "ce1", "--out", "new"], "got 'ce1'"),
    "train-recipe-zero-epochs": Case(["train", "--recipe", "ce:0", "--out", "new"], "epochs must be >= 1, got 0"),
    "train-unknown-loss": Case(["train", "--loss", "pcx", "--epochs", "1", "--out", "new"], "unknown loss 'pcx'"),
    "train-unknown-model": Case(["train", "--recipe", "ce:1", "--model", "lenet", "--out", "new"],
                                "unknown model 'lenet'"),
    "train-unknown-dataset": Case(["train", "--recipe", "ce:1", "--dataset", "mnist5k", "--out", "new"],
                                  "unknown dataset 'mnist5k'"),
    "train-epochs-without-loss": Case(["train", "--recipe", "ce:1", "--epochs", "3", "--out", "new"],
                                      "--epochs 3 goes with --loss"),
    "train-milestones-word": Case(["train", "--recipe", "ce:1", "--milestones", "5,ten", "--out", "new"],
                                  "got 'ten' in '5,ten'"),
    "train-lr-word": Case(["train", "--recipe", "ce:1", "--lr", "fast", "--out", "new"], "'fast'", code=2),
    "train-lr-negative": Case(["train", "--recipe", "ce:1", "--lr=-0.1", "--out", "new"], "got -0.1"),
    "train-batch-negative": Case(["train", "--recipe", "ce:1", "--batch-size", "-5", "--out", "new"], "got -5"),
    "train-adv-eps-above-1": Case(["train", "--recipe", "ce:1", "--adversarial", "fgsm", "--adv-eps", "8",
                                   "--out", "new"], "adversarial.eps: L-inf eps 8 is above 1"),
    "train-adv-eps-word": Case(["train", "--recipe", "ce:1", "--adversarial", "fgsm", "--adv-eps", "8/255,big",
                                "--out", "new"], "got 'big'"),
    "train-model-param-word": Case(["train", "--recipe", "ce:1", "--model-param", "feature_dim=abc", "--out", "new"],
                                   "got 'abc'"),
    "train-set-unknown-key": Case(["train", "--recipe", "ce:1", "--set", "optimizer.lrr=1", "--out", "new"],
                                  "optimizer.lrr: unknown key"),
    "train-set-empty-key": Case(["train", "--recipe", "ce:1", "--set", "optimizer..lr=1", "--out", "new"],
                                "'optimizer..lr': empty key"),
    "train-set-word-for-number": Case(["train", "--recipe", "ce:1", "--set", "optimizer.lr=abc", "--out", "new"],
                                      "optimizer.lr: expected a number (e.g. 0.1, 1e-3, 8/255), got 'abc'"),
    "train-config-unknown-key": Case(["train", "--config", "t.yaml", "--out", "new"], "optimizer.decay: unknown key",
                                     {"t.yaml": "optimizer: {lr: 1e-3, decay: 0.5}\n"}),
    "train-config-malformed": Case(["train", "--config", "t.yaml", "--out", "new"],
                                   "t.yaml: not valid YAML: line 1, column 6", {"t.yaml": "lr: a: b\n"}),
    "train-config-is-folder": Case(["train", "--config", ROOT, "--out", "new"], f"{ROOT}: is a folder"),
    # -- experiment files ---------------------------------------------------------------------------
    "run-missing-file": Case(["run", "absent.yaml", *DRY], "absent.yaml: no such experiment file"),
    "run-malformed-yaml": Case(["run", "x.yaml", *DRY], "x.yaml: not valid YAML: line 3",
                               {"x.yaml": "name: x\ntrain: {recipe: [\n"}),
    "run-not-a-mapping": Case(["run", "x.yaml", *DRY], "expected a mapping at the top", {"x.yaml": "- a\n- b\n"}),
    "run-unknown-top-key": Case(["run", "x.yaml", *DRY], "x.yaml:5: trian: unknown key",
                                {"x.yaml": experiment_file(trian="{}")}),
    "run-grid-scalar": Case(["run", "x.yaml", *DRY], "grid.train.seed: expected a list of values",
                            {"x.yaml": experiment_file(grid="{train.seed: 5}")}),
    "run-grid-empty": Case(["run", "x.yaml", *DRY], "grid.train.seed: empty list of values",
                           {"x.yaml": experiment_file(grid="{train.seed: []}")}),
    "run-grid-bad-value": Case(["run", "x.yaml", *DRY], "train.seed: expected an integer, got 'abc'",
                               {"x.yaml": experiment_file(grid="{train.seed: [0, abc]}")}),
    "run-no-attacks": Case(["run", "x.yaml", *DRY], "evaluate.attacks: empty: nothing to evaluate",
                           {"x.yaml": experiment_file(evaluate="{attacks: []}")}),
    "run-linf-eps-above-1": Case(["run", "x.yaml", *DRY], "L-inf eps 8 is above 1",
                                 {"x.yaml": experiment_file(evaluate="{attacks: [{attack: pgd, eps: [8]}]}")}),
    "run-eps-word": Case(["run", "x.yaml", *DRY], "got 'eight'",
                         {"x.yaml": experiment_file(evaluate="{attacks: [{attack: pgd, eps: [eight]}]}")}),
    "run-eps-unbounded-fgsm": Case(["run", "x.yaml", *DRY], "FGSM needs a numeric budget",
                                   {"x.yaml": experiment_file(evaluate="{attacks: [{attack: fgsm, eps: [inf], "
                                                                       "label: FGSM}]}")}),
    "run-unknown-variable": Case(["run", "x.yaml", *DRY], "unknown variable 'E'",
                                 {"x.yaml": experiment_file(vars="{T: 2}", grid="{train.seed: ['${E}']}")}),
    "run-set-unknown-key": Case(["run", "tiny.yaml", "--set", "train.epochs=3", *DRY], "train.epochs: unknown key",
                                {"tiny.yaml": EXPERIMENT}),
    "run-set-bad-index": Case(["run", "tiny.yaml", "--set", "train.recipe[5].epochs=1", *DRY],
                              "train.recipe[5].epochs", {"tiny.yaml": EXPERIMENT}),
    "run-set-no-value": Case(["run", "tiny.yaml", "--set", "train.seed", *DRY], "got 'train.seed'",
                             {"tiny.yaml": EXPERIMENT}),
    "run-missing-scale": Case(["run", "tiny.yaml", "--scale", "paper", *DRY], "no 'paper' preset",
                              {"tiny.yaml": EXPERIMENT}),
    "run-root-is-a-file": Case(["run", "tiny.yaml", "--dry-run", "--root", "tiny.yaml"],
                               "--root tiny.yaml: is a file, not a folder", {"tiny.yaml": EXPERIMENT}),
    "sweep-word-value": Case(["sweep", "tiny.yaml", "--over", "train.seed=1,two", *DRY], "'two' is not a number",
                             {"tiny.yaml": EXPERIMENT}),
    "sweep-one-point": Case(["sweep", "tiny.yaml", "--over", "train.optimizer.lr=1e-3:1e-2:1", *DRY],
                            "must be an integer >= 2, got 1", {"tiny.yaml": EXPERIMENT}),
    # -- the results store and its outputs ----------------------------------------------------------
    "export-under-a-file": Case(["export", "notes.txt/out.csv", "--root", ROOT], "notes.txt",
                                {"notes.txt": "a file, not a folder\n"}),
    "export-missing-format": Case(["export", "out.txt", "--root", ROOT], "cannot tell the format from '.txt'"),
    "export-into-proc": Case(["export", "/proc/robustloss-export.csv", "--root", ROOT], "/proc/robustloss-export.csv"),
    "report-out-is-a-file": Case(["report", "--out", "notes.txt", "--root", ROOT], "--out notes.txt: is a file",
                                 {"notes.txt": "a file\n"}),
    "report-out-under-a-file": Case(["report", "--out", "notes.txt/report", "--root", ROOT], "notes.txt/report",
                                    {"notes.txt": "a file\n"}),
    "report-unknown-experiment": Case(["report", "nope", "--root", ROOT], "no experiment 'nope'"),
    "ls-root-is-a-file": Case(["ls", "--root", "notes.txt"], "--root notes.txt: is a file", {"notes.txt": "x\n"}),
    "ls-store-is-a-folder": Case(["ls", "--store", ROOT], f"--store {ROOT}: is a folder"),
    "ls-no-store": Case(["ls", "--root", "elsewhere"], "no results store at elsewhere/results.sqlite"),
    "ls-bad-status": Case(["ls", "--status", "finished", "--root", ROOT], "'finished'", code=2),
    "show-unknown-run": Case(["show", "zzzz", "--root", ROOT], "no run matches 'zzzz'"),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A folder holding the finished tiny experiment: results/results.sqlite, results/models/<hash>/
    (a trained model, usable by `robustloss eval`) and results/runs/<hash>/."""
    folder = tmp_path_factory.mktemp("finished")
    (folder / "tiny.yaml").write_text(EXPERIMENT)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["run", "tiny.yaml", "--root", ROOT, "--device", "cpu", "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
    (folder / "tiny.yaml").unlink()
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def model_folder(work: Path) -> str:
    (model,) = (work / ROOT / "models").iterdir()
    return str(model.relative_to(work))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case: Case, finished, tmp_path):
    work = Path(shutil.copytree(finished, tmp_path / "work"))
    for name, text in case.files.items():
        (work / name).write_text(text)
    argv = [a.replace("{run}", model_folder(work)) for a in case.argv]
    before = snapshot(work)

    result = subprocess.run([sys.executable, "-m", "robustloss", *argv], check=False, cwd=work, env=ENV,
                            capture_output=True, text=True, timeout=300)

    output = result.stdout + result.stderr
    assert result.returncode == case.code, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if " error: " in line]
    assert len(errors) == 1, output
    assert case.expect in errors[0], errors[0]
    assert snapshot(work) == before, "files were changed, added or removed"


def test_the_table_covers_enough_cases():
    assert len(CASES) >= 40


# -- full disk ----------------------------------------------------------------------------------------


class FullDiskFile:
    """A file object whose writes fail the way they do on a full disk."""

    def __init__(self, real):
        self._real = real

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._real.close()

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def work(finished, tmp_path, monkeypatch) -> Path:
    folder = Path(shutil.copytree(finished, tmp_path / "work"))
    monkeypatch.chdir(folder)
    return folder


def test_full_disk_during_export_keeps_the_previous_file(work, monkeypatch, capsys):
    import builtins

    from robustloss.experiments.store import export as store_export

    (work / "out.csv").write_text("the previous export\n")
    before = snapshot(work)
    monkeypatch.setattr(store_export, "open", lambda *a, **k: FullDiskFile(builtins.open(*a, **k)), raising=False)

    assert main(["export", "out.csv", "--root", ROOT]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no space left on device writing out.csv" in err and "unchanged" in err, err
    assert snapshot(work) == before  # the old export, the store and the runs; no temporary file left


def test_full_disk_during_report_names_the_file(work, monkeypatch, capsys):
    from robustloss.report import render

    real_fdopen = os.fdopen
    monkeypatch.setattr(render.os, "fdopen", lambda *a, **k: FullDiskFile(real_fdopen(*a, **k)))

    assert main(["report", "--root", ROOT]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no space left on device writing " + str(Path(ROOT) / "reports" / "tiny-base.md") in err, err
    assert not [p for p in (work / ROOT / "reports").iterdir() if p.name.endswith(".tmp")]


def test_full_disk_during_run_fails_the_cell_clearly_and_stops(work, monkeypatch, capsys):
    from robustloss.experiments import runner

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(runner, "train", full_disk)
    (work / "tiny.yaml").write_text(EXPERIMENT)
    # two new cells (new seeds, so new models to train): the first fails, the second is not started
    assert main(["run", "tiny.yaml", "--root", ROOT, "--set", "grid.train.seed=[1, 2]", "--device", "cpu",
                 "--no-progress"]) == 1

    err = capsys.readouterr().err
    assert "no space left on device" in err and "the remaining cells were not started" in err, err
    with ResultsStore(work / ROOT / "results.sqlite") as store:
        (failed,) = store.runs(status="failed")
        assert failed.error.startswith("no space left on device") and failed.name == "method=CE, train.seed=1"
        assert [r.name for r in store.runs()] == ["method=CE", "method=CE, train.seed=1"]


# -- numbers as people write them -----------------------------------------------------------------------


def test_number_spellings_are_numbers():
    for text, value in [("1e-3", 0.001), ("5e-4", 0.0005), ("1E3", 1000.0), ("1.0e12", 1e12), (".5", 0.5),
                        ("-.5", -0.5), ("-2", -2), ("inf", float("inf")), ("0.1", 0.1)]:
        assert read_yaml_value(text) == value and type(read_yaml_value(text)) is type(value), text
        assert parse_number(text) == value, text
    assert parse_number("8/255") == 8 / 255
    assert read_yaml("lr: 1e-3\nname: 1e-3x\nlist: [1e-3, 3]\n") == {"lr": 0.001, "name": "1e-3x", "list": [0.001, 3]}
    for text in ("abc", "nan", "1/0", "", "8/"):
        with pytest.raises(ValueError):
            parse_number(text)


def test_number_spellings_in_set_and_files_are_accepted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(EXPERIMENT)  # lr: 1e-3, weight_decay: 5e-4, eps: [8/255, .1]
    assert main(["run", "tiny.yaml", "--dry-run", "--set", "train.optimizer.lr=5e-4",
                 "--set", "train.optimizer.gamma=1.0e-1", "--set", "evaluate.attacks[0].eps=[8/255, 1E-2, .05]",
                 "--set", "evaluate.n_test=1e1"]) == 0
    assert "1 cells" in capsys.readouterr().out
    from robustloss.experiments.schema import load_experiment

    (cell,) = load_experiment("tiny.yaml", overrides=["evaluate.attacks=[{attack: cw, eps: [inf]}]"]).cells
    assert cell.train.optimizer.lr == 0.001 and cell.train.optimizer.weight_decay == 0.0005
    assert cell.evaluate.attacks[0].eps == [None]  # inf: unbounded


def test_eval_flags_accept_fractions_exponents_and_large_l2_budgets():
    def config(*flags):
        return eval_config(build_parser().parse_args(["eval", "run", *flags]))

    assert config("--attacks", "fgsm", "--eps", "8/255,1e-2,.3").attacks[0].eps == [8 / 255, 0.01, 0.3]
    assert config("--attacks", "cw", "--eps", "inf").attacks[0].eps == [None]
    assert config("--attacks", "pgd-l2", "--eps", "2.5").attacks[0].eps == [2.5]  # L2 above 1 is ordinary
    with pytest.raises(ConfigError, match="L-inf eps 1.5 is above 1"):
        config("--attacks", "pgd", "--eps", "1.5")


def test_eval_runs_at_a_fraction_budget(work, capsys):
    run = model_folder(work)
    assert main(["eval", run, "--attacks", "fgsm", "--eps", "8/255", "--n-test", "10", "--no-cache",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "eps in {0.0313725}" in (work / run / "eval" / "results.md").read_text()  # 8/255
