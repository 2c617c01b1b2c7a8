"""An experiment file: base settings, grid axes and scale presets, resolved into run cells.

``load_experiment(path, scale, overrides)`` validates the file strictly (unknown keys and
wrong types name the key, its line in the file and the valid keys) and returns an
``Experiment`` whose ``cells`` are fully resolved ``RunCell`` objects: one per combination of
grid values, each with a validated ``TrainConfig``, ``EvaluateConfig`` and substitute models.

Order of overrides per cell: the base file, the cell's grid values, the scale preset, then
``--set`` (the command line wins); ``${...}`` is substituted last. See configs/README.md.

Numbers are read as a Python user writes them (``1e-3``, ``.5``, ``inf``; a float field also takes
``8/255``; see ``robustloss.config``). Refused at load time, besides unknown keys and wrong types:
an empty ``evaluate.attacks`` (nothing to evaluate), an attack with an empty ``eps`` list, and an
L-inf budget above 1 on the [0, 1] images (in the attacks or ``adversarial.eps``: most likely
0-255 units); L2 budgets above 1 are ordinary and accepted.

The package has one module per block or concern:

- ``blocks``: the dataclasses of the file's blocks and of the resolved experiment;
- ``hashing``: the config hashes that identify runs, and which axes are seeds;
- ``grid``: expanding the grid's axes, and overrides addressed to the grid;
- ``substitutes``: the substitute models transfer attacks reference;
- ``grid_models``: substitutes that are the grid's own models (``{grid: {method: SCE}}``);
- ``cell``: resolving one grid cell into a ``RunCell``;
- ``cell_checks``, ``sweep_checks``, ``analysis_checks``: what is refused at load time;
- ``published``: the paper's published numbers;
- ``locate``: the line of the file an error is about;
- ``loading``: ``load_experiment`` and ``resolve_experiment``, which tie these together.

Everything is re-exported here, so callers import from ``robustloss.experiments.schema``.
"""

from robustloss.experiments.schema.analysis_checks import analysis_cells, check_analysis
from robustloss.experiments.schema.blocks import (
    CELL_SECTIONS,
    SCALES,
    AnalysisSpec,
    ClaimSpec,
    Experiment,
    ExperimentFile,
    ReportConfig,
    RunCell,
    SweepConfig,
)
from robustloss.experiments.schema.cell_checks import check_model_params
from robustloss.experiments.schema.grid import expand_grid
from robustloss.experiments.schema.hashing import canonical, config_hash, seed_axes
from robustloss.experiments.schema.loading import load_experiment, resolve_experiment
from robustloss.experiments.schema.locate import key_lines
from robustloss.experiments.schema.published import read_published
from robustloss.experiments.schema.substitutes import SUBSTITUTE_INHERITS, substitute_reference
from robustloss.experiments.schema.sweep_checks import check_axis_changes_runs, check_sweep

__all__ = [
    "CELL_SECTIONS",
    "SCALES",
    "SUBSTITUTE_INHERITS",
    "AnalysisSpec",
    "ClaimSpec",
    "Experiment",
    "ExperimentFile",
    "ReportConfig",
    "RunCell",
    "SweepConfig",
    "analysis_cells",
    "canonical",
    "check_analysis",
    "check_axis_changes_runs",
    "check_model_params",
    "check_sweep",
    "config_hash",
    "expand_grid",
    "key_lines",
    "load_experiment",
    "read_published",
    "resolve_experiment",
    "seed_axes",
    "substitute_reference",
]
