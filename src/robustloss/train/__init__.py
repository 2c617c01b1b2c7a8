"""Training: configs, the epoch loop, recipes of (loss, epochs) phases, checkpoints and resume,
optional adversarial training."""

from robustloss.train.config import AdversarialConfig, OptimizerConfig, Phase, TrainConfig, parse_recipe
from robustloss.train.run_folder import is_complete, load_config
from robustloss.train.trainer import TrainResult, train

__all__ = ["AdversarialConfig", "OptimizerConfig", "Phase", "TrainConfig", "TrainResult", "parse_recipe", "train",
           "is_complete", "load_config"]
