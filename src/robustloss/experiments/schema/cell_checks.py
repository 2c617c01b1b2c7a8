"""Checks of one resolved cell: every name it uses exists, and its model can be built.

They run while the file is loaded, so a misspelt loss or a bad ``model_params`` option is refused
with the config (naming the key and the valid values) rather than partway through a grid run.
The registries are imported at the top: they sit below the experiments layer and never import
it back, so this makes no cycle.
"""

from __future__ import annotations

import functools
import json

from robustloss.attacks import ATTACKS, PRESETS
from robustloss.data import DATASETS
from robustloss.errors import ConfigError
from robustloss.evaluate.config import EvaluateConfig, check_linf_budget
from robustloss.losses import LOSSES
from robustloss.models import MODELS, create_model
from robustloss.train.config import TrainConfig


def check_names(train: TrainConfig, evaluate: EvaluateConfig, substitutes: dict[str, TrainConfig]) -> None:
    """Unknown dataset/model/loss/attack names fail at load time, listing the valid ones."""
    for where, config in [("train", train), *((f"substitutes.{k}", v) for k, v in substitutes.items())]:
        for key, registry in (("dataset", DATASETS), ("model", MODELS)):
            try:
                registry.get(getattr(config, key))
            except Exception as err:
                raise ConfigError(f"{where}.{key}: {err}") from None
        for i, phase in enumerate(config.recipe):
            try:
                LOSSES.get(phase.loss)
            except Exception as err:
                raise ConfigError(f"{where}.recipe[{i}].loss: {err}") from None
        check_model_params(config, where)
        if config.adversarial is not None:  # every adversarial-training method attacks in L-inf
            at = config.adversarial
            for eps in at.eps if isinstance(at.eps, list) else [at.eps]:
                check_linf_budget(eps, f"{where}.adversarial.eps")
    if not evaluate.attacks:
        raise ConfigError("evaluate.attacks: empty: nothing to evaluate; list at least one attack, e.g. "
                          "[{attack: pgd, eps: [0.1, 0.3]}] (see `robustloss attacks`)")
    for i, spec in enumerate(evaluate.plan()):
        if spec.attack not in ATTACKS and spec.attack not in PRESETS:
            valid = ", ".join(sorted([*ATTACKS.names(), *PRESETS.names()]))
            raise ConfigError(f"evaluate.attacks[{i}].attack: unknown attack {spec.attack!r}; valid: {valid}")
        spec.validate(f"evaluate.attacks[{i}]")


def check_model_params(config: TrainConfig, where: str = "") -> None:
    """Build the model once when ``model_params`` are given, so a bad option (feature_dim: abc) is
    refused with the config instead of after a run folder was created for it."""
    if config.model_params:
        key = f"{where}.model_params" if where else "model_params"
        _check_model_build(config.model, config.dataset, json.dumps(config.model_params, sort_keys=True), key)


@functools.lru_cache(maxsize=64)  # a grid repeats the same model options in many cells
def _check_model_build(model: str, dataset: str, params_json: str, key: str) -> None:
    spec = DATASETS.get(dataset)
    channels, height, _ = spec.image_shape
    params = {"num_classes": spec.num_classes, "in_channels": channels, "input_size": height}
    try:
        create_model(model, **params | json.loads(params_json))
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key} {params_json}: {err}") from None
