"""A run folder's own files: ``config.yaml`` (the settings it was trained with), ``metrics.csv`` and
the final ``model.pt``'s name. Claiming a folder refuses to overwrite another run by accident, and a
resumed run must have been started with exactly the same settings (the checkpoint is checked against them).
The checkpoints themselves are ``robustloss.train.run_checkpoints``'."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import yaml

from robustloss.checkpoint import atomic_write
from robustloss.config import from_dict, read_yaml, to_dict
from robustloss.errors import CheckpointError, ConfigError
from robustloss.train.config import TrainConfig

MODEL_FILE = "model.pt"


def is_complete(run_dir: str | Path, config: TrainConfig) -> bool:
    """True when ``run_dir`` already holds a finished model trained with exactly ``config``."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL_FILE).exists() or not (run_dir / "config.yaml").exists():
        return False
    return comparable_config(_read_config_file(run_dir / "config.yaml")) == to_dict(config)


def comparable_config(raw: object) -> object:
    """A stored config.yaml as ``to_dict`` would write it today: fields added since the run was
    written (e.g. ``adversarial``) take their defaults, so an older run still matches its config."""
    try:
        return to_dict(from_dict(TrainConfig, raw))
    except ConfigError:
        return raw  # not loadable as a TrainConfig: compared as is, and so reported as different


def _read_config_file(path: Path) -> dict:
    """A run's config.yaml as a mapping; a damaged one is refused, naming the file and what to do."""
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        reason = f"it is not readable YAML ({str(err).strip().splitlines()[0]})"
    else:
        if isinstance(raw, dict):
            return raw
        reason = f"it holds {type(raw).__name__}, not a mapping of settings"
    raise CheckpointError(f"{path} is damaged: {reason}. It records the run's settings: restore it, or delete it "
                          "and rerun with the run's exact settings and --resume (the checkpoint is checked against "
                          "them), or train into a new --out")


def claim_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    """Write config.yaml, refusing to overwrite a different or unfinished run by accident."""
    config_path = run_dir / "config.yaml"
    wanted = to_dict(config)
    if config_path.exists():
        if not resume:
            raise CheckpointError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        existing = comparable_config(_read_config_file(config_path))
        if existing != wanted:
            assert isinstance(existing, dict)
            changed = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
            raise CheckpointError(f"cannot resume {run_dir}: its config ({config_path}) differs in "
                                  f"{', '.join(changed)}; use a new --out for a new config")
    text = yaml.safe_dump(wanted, sort_keys=False)
    if not config_path.exists() or config_path.read_text(encoding="utf-8") != text:
        # Same settings, other text (an older version's file, or one cut short where every missing key
        # has its default): rewritten, so the file always states the run's settings in full.
        atomic_write(config_path, lambda f: f.write(text.encode("utf-8")), mode=0o644)


def write_metrics(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO(newline="")
    # Union of the rows' keys in first-seen order: a resumed run may add a column
    # (e.g. adv_fraction) that rows written by an older version lack.
    fieldnames = list(dict.fromkeys(key for row in history for key in row))
    writer = csv.DictWriter(buffer, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(history)
    text = buffer.getvalue()
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), mode=0o644)


def load_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
    return from_dict(TrainConfig, _read_config_file(path), path="")
