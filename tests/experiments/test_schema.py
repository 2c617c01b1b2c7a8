"""Experiment files: strict validation (one test per kind of mistake), grids, scales, hashing."""

from __future__ import annotations

import textwrap

import pytest

from robustloss.errors import ConfigError
from robustloss.experiments.overrides import parse_assignment, set_dotted, substitute
from robustloss.experiments.schema import config_hash, expand_grid, load_experiment
from robustloss.train import Phase, TrainConfig

BASE = """\
name: tiny
vars: {T: 2}
train:
  dataset: mnist-5k
  model: lenet5
  recipe: [{loss: ce, epochs: "${T}"}, {loss: pc, epochs: "${T}"}]
evaluate:
  attacks:
    - {attack: fgsm, eps: [0.1, 0.2], label: FGSM}
    - {attack: pgd, eps: [0.1], params: {steps: 5}, label: PGD}
grid:
  method:
    CE: {train.recipe: [{loss: ce, epochs: "${2*T}"}]}
    PC-LC: {}
  train.seed: [0, 1]
scales:
  smoke: {vars.T: 1, evaluate.n_test: 20}
  demo: {}
"""


def write(tmp_path, text: str, name: str = "exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path, text: str, scale=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, text), scale, overrides)
    return str(info.value)


# -- grids, scales, substitution, hashing ---------------------------------------------------------
def test_grid_expands_named_and_key_axes_in_order(tmp_path):
    experiment = load_experiment(write(tmp_path, BASE))
    assert [c.labels for c in experiment.cells] == [
        {"method": "CE", "train.seed": "0"}, {"method": "CE", "train.seed": "1"},
        {"method": "PC-LC", "train.seed": "0"}, {"method": "PC-LC", "train.seed": "1"},
    ]
    ce, pc = experiment.cells[0], experiment.cells[2]
    assert [(p.loss, p.epochs) for p in ce.train.recipe] == [("ce", 4)]  # ${2*T} with T = 2
    assert [(p.loss, p.epochs) for p in pc.train.recipe] == [("ce", 2), ("pc", 2)]
    assert [c.train.seed for c in experiment.cells] == [0, 1, 0, 1]


def test_expand_grid_is_a_cartesian_product():
    combos = expand_grid({"a": [1, 2, 3], "b": {"x": {"train.seed": 1}, "y": None}})
    assert len(combos) == 6
    assert combos[1] == ({"a": "1", "b": "y"}, [("a", 1)])


def test_scale_and_set_override_every_cell_and_are_recorded(tmp_path):
    experiment = load_experiment(write(tmp_path, BASE), "smoke", ["train.optimizer.lr=0.001"])
    for cell in experiment.cells:
        assert cell.evaluate.n_test == 20 and cell.train.optimizer.lr == 0.001
        assert any("evaluate.n_test" in c and "scale smoke" in c for c in cell.changes)
    assert [(p.loss, p.epochs) for p in experiment.cells[0].train.recipe] == [("ce", 2)]  # T = 1 from the scale


def test_set_wins_over_grid_values(tmp_path):
    experiment = load_experiment(write(tmp_path, BASE), None, ["train.seed=7"])
    assert {c.train.seed for c in experiment.cells} == {7}
    assert len({c.hash for c in experiment.cells}) == 2  # the seed axis collapsed: one run per method


def test_set_can_reshape_the_grid(tmp_path):
    experiment = load_experiment(write(tmp_path, BASE), None, ["grid.train.seed=[0, 1, 2]"])
    assert len(experiment.cells) == 6


def test_hash_is_stable_and_sensitive(tmp_path):
    a = load_experiment(write(tmp_path, BASE)).cells
    b = load_experiment(write(tmp_path, BASE, "copy.yaml")).cells
    assert [c.hash for c in a] == [c.hash for c in b]
    assert len({c.hash for c in a}) == 4
    changed = load_experiment(write(tmp_path, BASE), None, ["evaluate.n_test=10"]).cells
    assert changed[0].hash != a[0].hash and changed[0].train_hash == a[0].train_hash  # same model, new eval


def test_hash_ignores_options_left_at_their_default():
    # Adding a new option with a default must not change existing runs' hashes.
    explicit = TrainConfig(recipe=[Phase("ce", 3)], batch_size=256, augment="auto")
    assert config_hash(explicit) == config_hash(TrainConfig(recipe=[Phase("ce", 3)]))
    assert config_hash(TrainConfig(recipe=[Phase("ce", 3)], seed=1)) != config_hash(explicit)


def test_substitutes_inherit_the_cells_dataset_and_are_only_built_when_referenced(tmp_path):
    text = BASE.replace("    - {attack: pgd, eps: [0.1], params: {steps: 5}, label: PGD}\n",
                        "    - {attack: transfer-pgd-pc, eps: [0.1], params: {substitute: '@sub'}, label: T}\n")
    text += "substitutes:\n  sub: {model: cnn3, recipe: [{loss: ce, epochs: 1}]}\n  unused: {model: cnn3}\n"
    cell = load_experiment(write(tmp_path, text)).cells[0]
    assert list(cell.substitutes) == ["sub"]
    assert cell.substitutes["sub"].dataset == "mnist-5k" and cell.substitutes["sub"].model == "cnn3"


def test_plan_applies_default_objective_and_overrides(tmp_path):
    text = BASE.replace("evaluate:\n", "evaluate:\n  objective: cw\n  overrides: {pgd: {steps: 2}}\n")
    plan = load_experiment(write(tmp_path, text)).cells[0].evaluate.plan()
    assert plan[0].params == {"objective": "cw"}
    assert plan[1].params == {"steps": 2, "objective": "cw"}


def test_substitute_expressions():
    assert substitute({"a": "${2*T}", "b": "${8/255}", "c": "T is ${T}"}, {"T": 50}) == {
        "a": 100, "b": pytest.approx(8 / 255), "c": "T is 50"}
    with pytest.raises(ConfigError, match="unknown variable 'U'; vars: T"):
        substitute("${U}", {"T": 1}, "x")
    # a null variable leaves an option unset, only as a whole value: in arithmetic it is an error
    assert substitute({"embed_dim": "${EMB}", "n": "${T}"}, {"EMB": None, "T": 3}) == {"embed_dim": None, "n": 3}
    with pytest.raises(ConfigError, match="vars.EMB: expected a number, got None"):
        substitute("${2*EMB}", {"EMB": None}, "x")


def test_set_dotted_and_parse_assignment():
    doc = {"train": {"recipe": [{"loss": "ce", "epochs": 1}]}}
    set_dotted(doc, "train.recipe[0].epochs", 5)
    set_dotted(doc, "train.optimizer.lr", 0.1)
    assert doc == {"train": {"recipe": [{"loss": "ce", "epochs": 5}], "optimizer": {"lr": 0.1}}}
    assert parse_assignment("a.b=[1, 2]") == ("a.b", [1, 2])
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        parse_assignment("no-equals-sign")


# -- one test per kind of mistake -----------------------------------------------------------------
def test_unknown_top_level_key_names_key_line_and_valid_keys(tmp_path):
    message = error_of(tmp_path, BASE + "evalute: {}\n")
    assert "evalute: unknown key" in message and "exp.yaml:" in message
    assert "evaluate" in message and "grid" in message  # the valid keys are listed


def test_unknown_nested_key_points_at_its_line(tmp_path):
    text = BASE.replace("  model: lenet5\n", "  model: lenet5\n  optimizer: {nmae: sgd}\n")
    message = error_of(tmp_path, text)
    assert "train.optimizer.nmae: unknown key" in message
    assert "exp.yaml:6:" in message and "lr" in message


def test_wrong_type_says_what_was_expected(tmp_path):
    message = error_of(tmp_path, BASE.replace("  model: lenet5\n", "  model: lenet5\n  batch_size: big\n"))
    assert "train.batch_size: expected an integer, got 'big'" in message


def test_out_of_range_value_is_rejected(tmp_path):
    message = error_of(tmp_path, BASE.replace("  model: lenet5\n", "  model: lenet5\n  batch_size: 0\n"))
    assert "batch_size must be >= 1" in message


def test_bad_literal_lists_the_choices(tmp_path):
    message = error_of(tmp_path, BASE.replace("evaluate:\n", "evaluate:\n  mode: fastest\n"))
    assert "evaluate.mode: expected one of 'protocol', 'worst-case'" in message


def test_unknown_loss_attack_dataset_list_valid_names(tmp_path):
    assert "pc" in error_of(tmp_path, BASE.replace("{loss: pc,", "{loss: pcc,"))
    message = error_of(tmp_path, BASE.replace("attack: fgsm", "attack: fgsmm"))
    assert "unknown attack 'fgsmm'" in message and "pgd" in message
    assert "mnist" in error_of(tmp_path, BASE.replace("dataset: mnist-5k", "dataset: mnits"))


def test_bad_attack_parameter_is_reported_with_its_attack(tmp_path):
    message = error_of(tmp_path, BASE.replace("params: {steps: 5}", "params: {stepz: 5}"))
    assert "evaluate.attacks[1]" in message and "stepz" in message


def test_errors_name_the_grid_cell(tmp_path):
    message = error_of(tmp_path, BASE.replace("CE: {train.recipe: [{loss: ce, epochs: \"${2*T}\"}]}",
                                              "CE: {train.recipe: [{loss: ce, epochs: -1}]}"))
    assert "grid cell method=CE" in message and "epochs must be >= 1" in message


def test_grid_value_must_be_list_or_mapping(tmp_path):
    message = error_of(tmp_path, BASE + "  extra: 3\n".replace("  extra", "") if False else
                       BASE.replace("  train.seed: [0, 1]\n", "  train.seed: 3\n"))
    assert "grid.train.seed: expected a list of values or a mapping" in message


def test_unknown_scale_and_missing_scale(tmp_path):
    assert "valid scales: smoke, demo, paper" in error_of(tmp_path, BASE, scale="huge")
    assert "no 'paper' preset (it has: smoke, demo)" in error_of(tmp_path, BASE, scale="paper")
    assert "scales.tiny: unknown scale" in error_of(tmp_path, BASE + "  tiny: {}\n")


def test_unknown_variable_and_missing_name(tmp_path):
    assert "unknown variable 'U'" in error_of(tmp_path, BASE.replace('"${T}"}, {loss: pc', '"${U}"}, {loss: pc'))
    assert "name: required" in error_of(tmp_path, BASE.replace("name: tiny\n", ""))


def test_bad_set_override_is_validated_like_the_file(tmp_path):
    message = error_of(tmp_path, BASE, overrides=["train.optimzer.lr=0.1"])
    assert "train.optimzer: unknown key" in message


def test_invalid_yaml_and_missing_file(tmp_path):
    assert "not valid YAML" in error_of(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "missing.yaml")
