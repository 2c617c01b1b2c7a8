"""Config parsing: errors name the bad key and what was expected."""

from __future__ import annotations

import pytest

from robustloss.config import from_dict, to_dict
from robustloss.errors import ConfigError
from robustloss.train import Phase, TrainConfig, parse_recipe


def test_round_trip():
    config = TrainConfig(recipe=[Phase("ce", 5), Phase("pc", 5, {"xi": 0.9})])
    assert from_dict(TrainConfig, to_dict(config)) == config


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"datset": "mnist"}, r"datset: unknown key; valid keys here: dataset, model"),
        ({"optimizer": {"lr": 0.1, "momentun": 0.9}}, r"optimizer.momentun: unknown key; valid keys here: name, lr"),
        ({"recipe": [{"loss": "ce", "epochs": 2}, {"loss": "pc", "epoch": 2}]}, r"recipe\[1\].epoch: unknown key"),
        ({"batch_size": "big"}, r"batch_size: expected an integer, got 'big'"),
        ({"optimizer": {"name": "rmsprop"}}, r"optimizer.name: expected one of 'adam', 'sgd'"),
        ({"recipe": [{"loss": "ce", "epochs": 0}]}, r"epochs must be >= 1"),
        ({"recipe": "ce:10"}, r"recipe: expected a list"),
        ({"optimizer": {"lr": -1}}, r"optimizer.lr must be > 0"),
    ],
)
def test_errors_point_at_the_bad_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, raw)


def test_parse_recipe():
    assert parse_recipe("ce:50, pc:50") == [Phase("ce", 50), Phase("pc", 50)]
    with pytest.raises(ConfigError, match="LOSS:EPOCHS"):
        parse_recipe("ce50")


@pytest.mark.parametrize("text, message", [("ce:2,,pc:1", "phase 2 of 3 is empty"), ("", "empty"),
                                           ("ce:2,", "phase 2 of 2 is empty")])
def test_parse_recipe_refuses_empty_phases(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe(text)


def test_phase_lookup():
    config = TrainConfig(recipe=[Phase("ce", 2), Phase("pc", 3)])
    assert [config.phase_at(e)[1].loss for e in range(5)] == ["ce", "ce", "pc", "pc", "pc"]
    assert config.total_epochs == 5
