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
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustloss.config import from_dict, read_yaml, to_dict, yaml_error_text
from robustloss.errors import ConfigError
from robustloss.evaluate.config import AttackSpec, EvaluateConfig, check_linf_budget
from robustloss.evaluate.metrics import METRICS
from robustloss.experiments.overrides import parse_assignment, set_dotted, split_path, substitute
from robustloss.experiments.shipped import find_experiment
from robustloss.train.config import TrainConfig

SCALES = ("smoke", "demo", "paper")
CELL_SECTIONS = ("train", "evaluate", "substitutes", "vars")  # what a cell override may change


@dataclass
class ReportConfig:
    columns: str = "method"  # the grid axis whose values are the table's columns
    sections: str | None = None  # the grid axis whose values split the table


@dataclass
class ClaimSpec:
    """A comparison the paper claims: column ``better`` is more robust than column ``than`` (columns are
    values of ``report.columns``). The report's Findings test it on every row where the paper prints both
    numbers (or only ``rows``, in ``sections``), plus our worst case, and give each a verdict."""

    better: str
    than: str
    rows: list[str] | None = None  # attack rows (labels) to test; None: every row the paper prints for both
    sections: list[str] | None = None  # sections to test; None: all
    text: str = ""  # the claim in words; default "BETTER is more robust than THAN"

    @property
    def statement(self) -> str:
        return self.text or f"{self.better} is more robust than {self.than}"


@dataclass
class SweepConfig:
    """A metric plotted along one numeric grid axis (a line plot) or two (a heatmap and a surface).

    Checked against the grid and the attacks by ``check_sweep`` once the cells are resolved.
    """

    x: str = ""  # the grid axis on the plot's x
    y: str | None = None  # a second grid axis: a heatmap and a 3-D surface instead of lines
    metric: str = "accuracy"  # one of the report's metrics (robustloss.evaluate.metrics.METRICS)
    rows: list[str] = field(default_factory=list)  # attack labels to plot; empty: every attack
    eps: float | list[float] | None = None  # budgets to plot; empty: every budget of those rows
    average: list[str] = field(default_factory=list)  # more axes to average over (seed axes always are)
    log_x: bool = False
    log_y: bool = False
    x_label: str = ""  # shown on the plot; default: the axis's last part (vars.s -> s)
    y_label: str = ""

    def __post_init__(self) -> None:
        if not self.x:
            raise ConfigError("sweep.x: required: the grid axis on the plot's x (e.g. x: vars.s)")
        if self.eps is None:
            self.eps = []
        elif not isinstance(self.eps, list):
            self.eps = [self.eps]  # one budget may be written without brackets

    @property
    def axes(self) -> list[str]:
        return [self.x] if self.y is None else [self.x, self.y]


@dataclass
class AnalysisSpec:
    """An analysis (``robustloss analyze NAME``) the runner computes after the grid, over the
    experiment's trained models; its PNG, CSV and summary go into the experiment's report."""

    name: str = ""  # a registered analysis: gap, rank, embedding, features
    params: dict[str, Any] = field(default_factory=dict)  # the analysis's parameters (see `robustloss analyze NAME -h`)
    models: dict[str, list[str]] = field(default_factory=dict)  # grid axis -> values to include; empty: every model
    n_test: int | None = None  # only the first N test samples

    def __post_init__(self) -> None:
        if self.n_test is not None and self.n_test < 1:
            raise ConfigError(f"analyses: n_test must be >= 1 (or null for the whole test split), got {self.n_test}")


@dataclass
class ExperimentFile:
    """The top level of an experiment YAML (``train``/``evaluate`` are validated per cell)."""

    name: str
    title: str = ""
    paper: str = ""
    table: str = ""
    published: str | None = None
    notes: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    substitutes: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    report: ReportConfig = field(default_factory=ReportConfig)
    sweep: SweepConfig | None = None  # what `robustloss sweep` and the report plot (optional)
    analyses: list[AnalysisSpec] = field(default_factory=list)  # run after the grid; shown in the report
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: list[ClaimSpec] = field(default_factory=list)  # the paper's comparisons, tested in the report

    def __post_init__(self) -> None:
        columns = self.grid.get(self.report.columns)
        for i, claim in enumerate(self.claims):
            for name in (claim.better, claim.than):
                if isinstance(columns, dict) and name not in columns:
                    raise ConfigError(f"claims[{i}]: {name!r} is not a value of the grid axis "
                                      f"{self.report.columns!r}; values: {', '.join(map(str, columns))}")
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", self.name):
            raise ConfigError(f"name: use letters, digits, '-', '_' or '.', got {self.name!r}")
        unknown = [s for s in self.scales if s not in SCALES]
        if unknown:
            raise ConfigError(f"scales.{unknown[0]}: unknown scale; valid scales: {', '.join(SCALES)}")


@dataclass
class RunCell:
    """One fully resolved run of an experiment: a model to train and the attacks to run on it."""

    labels: dict[str, str]  # grid axis -> value name
    train: TrainConfig
    evaluate: EvaluateConfig
    substitutes: dict[str, TrainConfig]  # only those the attacks reference
    changes: list[str] = field(default_factory=list)  # what the scale/--set changed, for the report

    @property
    def name(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.labels.items()) or "base"

    @property
    def train_hash(self) -> str:
        return config_hash(self.train)

    @property
    def hash(self) -> str:
        return config_hash({"train": canonical(self.train), "evaluate": canonical(self.evaluate),
                            "substitutes": {k: canonical(v) for k, v in self.substitutes.items()}})

    def to_dict(self) -> dict:
        return {"labels": self.labels, "train": to_dict(self.train), "evaluate": to_dict(self.evaluate),
                "substitutes": {k: to_dict(v) for k, v in self.substitutes.items()}, "changes": self.changes}


@dataclass
class Experiment:
    file: ExperimentFile
    path: Path | None
    scale: str
    cells: list[RunCell]
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.file.name

    def published_path(self) -> Path | None:
        if not self.file.published:
            return None
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / self.file.published

    def document(self) -> dict:
        """What the store keeps about the experiment, so reports need nothing else."""
        return {"file": to_dict(self.file), "path": str(self.path) if self.path else None, "scale": self.scale,
                "overrides": self.overrides, "published": read_published(self.published_path())}


def canonical(config: Any) -> Any:
    """``to_dict`` without the keys left at their defaults, so adding a new option with a default
    later does not change the hash of every existing run."""
    data = to_dict(config)
    defaults = to_dict(type(config)()) if _has_defaults(type(config)) else {}
    return {k: v for k, v in data.items() if k not in defaults or defaults[k] != v}


def _has_defaults(cls: type) -> bool:
    try:
        cls()
    except TypeError:
        return False
    return True


def seed_axes(axes: list[str]) -> list[str]:
    """Axes averaged over (mean ± std): any axis named like a seed."""
    return [a for a in axes if a == "seed" or a.endswith(".seed")]


def config_hash(config: Any) -> str:
    data = config if isinstance(config, dict) else canonical(config)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
def load_experiment(path: str | Path, scale: str | None = None, overrides: list[str] | tuple = ()) -> Experiment:
    """The experiment in the YAML file ``path``, or the shipped experiment of that name (``pc-table1``)."""
    path = find_experiment(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected an experiment YAML file such as configs/pc_table1.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected an experiment YAML file)") from None
    try:
        raw = read_yaml(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_text(err)}") from None
    lines = key_lines(text)
    try:
        return resolve_experiment(raw, scale, overrides, path=path)
    except ConfigError as err:
        raise ConfigError(_locate(str(err), path, lines)) from None


def resolve_experiment(raw: Any, scale: str | None = None, overrides: list[str] | tuple = (),
                       path: Path | None = None) -> Experiment:
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top of the file (name:, train:, evaluate:, ...)")
    if "name" not in raw:
        raise ConfigError("name: required (the experiment's name, e.g. name: pc-table1)")
    document = copy.deepcopy(raw)
    file = from_dict(ExperimentFile, document)
    if scale is not None and scale not in SCALES:
        raise ConfigError(f"--scale {scale}: unknown scale; valid scales: {', '.join(SCALES)}")
    if scale is not None and scale not in file.scales:
        have = ", ".join(file.scales) or "none"
        raise ConfigError(f"scales: this file has no {scale!r} preset (it has: {have})")

    preset = dict(file.scales.get(scale, {})) if scale else {}
    assignments = [parse_assignment(a) for a in overrides]
    # Overrides of the grid (or of metadata) reshape the experiment itself; the rest are per cell.
    top_level = [(k, v) for k, v in [*preset.items(), *assignments] if split_path(k)[0] not in CELL_SECTIONS]
    if top_level:
        for key, value in top_level:
            _set_top_level(document, key, value)
        file = from_dict(ExperimentFile, document)
    per_cell = [(k, v, f"scale {scale}") for k, v in preset.items() if split_path(k)[0] in CELL_SECTIONS]
    per_cell += [(k, v, "--set") for k, v in assignments if split_path(k)[0] in CELL_SECTIONS]

    cells = [_resolve_cell(file, labels, sets, per_cell) for labels, sets in expand_grid(file.grid)]
    if file.sweep is not None:
        check_sweep(file.sweep, file.grid, cells)
    for i, analysis in enumerate(file.analyses):
        check_analysis(analysis, cells, f"analyses[{i}]")
    return Experiment(file=file, path=path, scale=scale or "base", cells=cells, overrides=list(overrides))


def _set_top_level(document: dict, key: str, value: Any) -> None:
    """Like ``set_dotted``, but grid axis names may contain dots (``grid.train.seed``): the
    longest existing axis that prefixes the key is the axis, else the whole rest is a new axis."""
    if not key.startswith("grid."):
        set_dotted(document, key, value)
        return
    grid = document.setdefault("grid", {}) or {}
    document["grid"] = grid
    rest = key[len("grid."):]
    axis = max((a for a in grid if rest == a or rest.startswith(a + ".")), key=len, default=rest)
    if rest == axis:
        grid[axis] = copy.deepcopy(value)
    else:
        entries = grid[axis]
        if not isinstance(entries, dict):
            raise ConfigError(f"{key}: grid.{axis} is a list of values; set the whole list instead")
        name, _, inner = rest[len(axis) + 1:].partition(".")
        if inner:
            entries.setdefault(name, {})
            entries[name] = dict(entries[name] or {}) | {inner: copy.deepcopy(value)}
        else:
            entries[name] = copy.deepcopy(value)


def expand_grid(grid: dict[str, Any]) -> list[tuple[dict[str, str], list[tuple[str, Any]]]]:
    """Every combination of the grid's axes: (axis -> value name, [(dotted key, value), ...]).

    An axis whose value is a list sets the key named by the axis (``train.seed: [0, 1]``); an
    axis whose value is a mapping is named: each entry maps a value name to overrides.
    """
    axes: list[tuple[str, list[tuple[str, list[tuple[str, Any]]]]]] = []
    for axis, values in grid.items():
        if isinstance(values, list):
            if not values:
                raise ConfigError(f"grid.{axis}: empty list of values")
            split_path(axis)
            axes.append((axis, [(_show(v), [(axis, v)]) for v in values]))
        elif isinstance(values, dict):
            if not values:
                raise ConfigError(f"grid.{axis}: no values")
            entries = []
            for name, sets in values.items():
                if sets is None:
                    sets = {}
                if not isinstance(sets, dict):
                    raise ConfigError(f"grid.{axis}.{name}: expected a mapping of overrides "
                                      f"(e.g. {{train.dataset: mnist}}), got {sets!r}")
                for key in sets:
                    if split_path(key)[0] not in CELL_SECTIONS:
                        raise ConfigError(f"grid.{axis}.{name}.{key}: grid values may set "
                                          f"{', '.join(s + '.*' for s in CELL_SECTIONS)}")
                entries.append((str(name), list(sets.items())))
            axes.append((axis, entries))
        else:
            raise ConfigError(f"grid.{axis}: expected a list of values or a mapping of named overrides, "
                              f"got {values!r}")
    combos = []
    for choice in itertools.product(*(values for _, values in axes)):
        labels = {axis: name for (axis, _), (name, _) in zip(axes, choice)}
        sets = [kv for _, kvs in choice for kv in kvs]
        combos.append((labels, sets))
    return combos


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _resolve_cell(file: ExperimentFile, labels: dict[str, str], cell_sets: list[tuple[str, Any]],
                  later: list[tuple[str, Any, str]]) -> RunCell:
    doc = {"train": copy.deepcopy(file.train), "evaluate": copy.deepcopy(file.evaluate),
           "substitutes": copy.deepcopy(file.substitutes), "vars": copy.deepcopy(file.vars)}
    where = ", ".join(f"{k}={v}" for k, v in labels.items())
    context = f" (grid cell {where})" if where else ""
    try:
        for key, value in cell_sets:
            set_dotted(doc, key, value)
        changes = []
        for key, value, origin in later:
            old = _get(doc, key)
            set_dotted(doc, key, value)
            if old != value:
                changes.append(f"{key}: {_brief(old)} -> {_brief(value)} ({origin})")
        variables = doc["vars"]
        resolved = {k: substitute(doc[k], variables, k) for k in ("train", "evaluate", "substitutes")}
        train = from_dict(TrainConfig, resolved["train"], path="train")
        evaluate = from_dict(EvaluateConfig, resolved["evaluate"], path="evaluate")
        substitutes = _substitutes(resolved["train"], resolved["substitutes"], evaluate)
        _check_names(train, evaluate, substitutes)
    except ConfigError as err:
        raise ConfigError(f"{err}{context}") from None
    return RunCell(labels=labels, train=train, evaluate=evaluate, substitutes=substitutes, changes=changes)


def _get(doc: dict, key: str) -> Any:
    node: Any = doc
    for part in split_path(key):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def substitute_reference(spec: AttackSpec) -> str | None:
    """NAME when the attack uses ``substitute: "@NAME"`` (a model from ``substitutes:``), else None."""
    reference = spec.resolved()[1].get("substitute")
    return reference[1:] if isinstance(reference, str) and reference.startswith("@") else None


SUBSTITUTE_INHERITS = ("dataset", "max_train_samples", "batch_size", "augment", "seed")


def _substitutes(train: dict, substitutes: dict, evaluate: EvaluateConfig) -> dict[str, TrainConfig]:
    """The substitute models the cell's transfer attacks reference (``substitute: "@NAME"``)."""
    wanted = []
    for spec in evaluate.plan():
        name = substitute_reference(spec)
        if name is not None:
            if name not in substitutes:
                have = ", ".join(substitutes) or "none defined"
                raise ConfigError(f"evaluate.attacks: {spec.name} uses substitute '@{name}'; substitutes: {have}")
            wanted.append(name)
    out = {}
    for name in dict.fromkeys(wanted):
        settings = {k: train[k] for k in SUBSTITUTE_INHERITS if k in train} | dict(substitutes[name])
        out[name] = from_dict(TrainConfig, settings, path=f"substitutes.{name}")
    return out


def _check_names(train: TrainConfig, evaluate: EvaluateConfig, substitutes: dict[str, TrainConfig]) -> None:
    """Unknown dataset/model/loss/attack names fail at load time, listing the valid ones."""
    from robustloss.attacks import ATTACKS, PRESETS
    from robustloss.data import DATASETS
    from robustloss.losses import LOSSES
    from robustloss.models import MODELS

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
    from robustloss.data import DATASETS
    from robustloss.models import create_model

    spec = DATASETS.get(dataset)
    channels, height, _ = spec.image_shape
    params = {"num_classes": spec.num_classes, "in_channels": channels, "input_size": height}
    try:
        create_model(model, **params | json.loads(params_json))
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key} {params_json}: {err}") from None


# ---------------------------------------------------------------------------------------------
def check_sweep(sweep: SweepConfig, grid: dict[str, Any], cells: list[RunCell]) -> None:
    """The sweep's axes are numeric grid axes that change the runs; its metric, rows and budgets exist."""
    for key, axis in (("x", sweep.x), ("y", sweep.y)):
        if axis is None:
            continue
        if axis not in grid:
            have = ", ".join(grid) or "none (add one, e.g. grid: {vars.s: [1, 1.5, 2]})"
            raise ConfigError(f"sweep.{key}: {axis!r} is not a grid axis; grid axes: {have}")
        _check_numeric_axis(axis, grid[axis])
        check_axis_changes_runs(axis, cells, f"sweep.{key}")
    if sweep.y == sweep.x:
        raise ConfigError(f"sweep.y: the same axis as sweep.x ({sweep.x}); choose another axis or drop y")
    for axis in sweep.average:
        if axis not in grid or axis in sweep.axes:
            valid = ", ".join(a for a in grid if a not in sweep.axes) or "none"
            raise ConfigError(f"sweep.average: {axis!r} is not a grid axis besides the sweep's; valid: {valid}")
    if sweep.metric not in METRICS:
        raise ConfigError(f"sweep.metric: unknown metric {sweep.metric!r}; valid: {', '.join(METRICS)}")
    budgets: dict[str, set] = {}  # attack label -> its budgets, over every cell
    for cell in cells:
        for spec in cell.evaluate.plan():
            budgets.setdefault(spec.name, set()).update(spec.eps)
    for row in sweep.rows:
        if row != "clean" and row not in budgets:
            raise ConfigError(f"sweep.rows: no attack is labelled {row!r}; labels: {', '.join(['clean', *budgets])}")
    offered = {e for row in (sweep.rows or budgets) for e in budgets.get(row, ()) if e is not None}
    for eps in sweep.eps:
        if not any(math.isclose(eps, e, rel_tol=1e-6) for e in offered):
            have = ", ".join(f"{e:g}" for e in sorted(offered)) or "none"
            raise ConfigError(f"sweep.eps: no plotted attack runs at eps {eps:g}; their budgets: {have}")


def check_analysis(spec: AnalysisSpec, cells: list[RunCell], where: str) -> None:
    """A registered analysis, with parameters it takes, over models that exist in the grid."""
    from robustloss.analysis.registry import analysis_names, analysis_parameters

    if spec.name not in analysis_names():
        raise ConfigError(f"{where}.name: unknown analysis {spec.name!r}; valid: {', '.join(analysis_names())}")
    valid = analysis_parameters(spec.name)
    for key in spec.params:
        if key not in valid:
            raise ConfigError(f"{where}.params.{key}: unknown parameter of analysis {spec.name!r}; "
                              f"valid: {', '.join(valid)}")
    for axis, values in spec.models.items():
        offered = list(dict.fromkeys(c.labels[axis] for c in cells if axis in c.labels))
        if not offered:
            axes = ", ".join(cells[0].labels) if cells and cells[0].labels else "none"
            raise ConfigError(f"{where}.models.{axis}: not a grid axis; grid axes: {axes}")
        for value in values if isinstance(values, list) else [values]:
            if str(value) not in offered:
                raise ConfigError(f"{where}.models.{axis}: no cell has {axis}={value}; values: {', '.join(offered)}")
    if not analysis_cells(spec, cells):
        raise ConfigError(f"{where}.models: selects no model")


def analysis_cells(spec: AnalysisSpec, cells: list[RunCell]) -> list[RunCell]:
    """The cells whose models the analysis covers, one per trained model (first cell wins)."""
    chosen, seen = [], set()
    for cell in cells:
        wanted = all(cell.labels.get(axis) in [str(v) for v in (values if isinstance(values, list) else [values])]
                     for axis, values in spec.models.items())
        if wanted and cell.train_hash not in seen:
            seen.add(cell.train_hash)
            chosen.append(cell)
    return chosen


def _check_numeric_axis(axis: str, values: Any) -> None:
    """A key axis needs numbers; a named axis needs value names that read as numbers ("128": {...})."""
    names = values if isinstance(values, list) else list(values or {})
    for value in names:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric and isinstance(value, str):
            try:
                float(value)
                numeric = True
            except ValueError:
                pass
        if not numeric:
            raise ConfigError(f"grid.{axis}: a sweep axis needs numeric values, got {value!r}")


def check_axis_changes_runs(axis: str, cells: list[RunCell], where: str) -> None:
    """Two values of the axis that give the same run mean the axis sets something nothing reads
    (a misspelt attack label under evaluate.overrides, an unused variable): the plot would be flat."""
    runs: dict[tuple, dict[str, str]] = {}  # the other axes' values -> this axis's value -> what runs
    for cell in cells:
        others = tuple((k, v) for k, v in cell.labels.items() if k != axis)
        seen = runs.setdefault(others, {})
        work = _what_runs(cell)
        same = [value for value, run in seen.items() if run == work]
        if same:
            raise ConfigError(f"{where}: grid axis {axis} changes nothing: {axis}={same[0]} and "
                              f"{axis}={cell.labels[axis]} give the same run{_unused_hint(axis, cells)}")
        seen[cell.labels[axis]] = work


def _what_runs(cell: RunCell) -> str:
    """A hash of what the cell trains and attacks with: the attacks with their overrides applied,
    rather than the overrides themselves (an override nothing picks up changes ``cell.hash`` only)."""
    evaluate = {k: v for k, v in canonical(cell.evaluate).items() if k not in ("attacks", "overrides")}
    return config_hash({"train": canonical(cell.train), "evaluate": evaluate,
                        "plan": [to_dict(spec) for spec in cell.evaluate.plan()],
                        "substitutes": {k: canonical(v) for k, v in cell.substitutes.items()}})


def _unused_hint(axis: str, cells: list[RunCell]) -> str:
    parts = split_path(axis)
    if parts[:2] == ["evaluate", "overrides"] and len(parts) > 2:
        names = {n for cell in cells for spec in cell.evaluate.plan()
                 for n in (spec.attack, spec.resolved()[0], spec.name)}
        if parts[2] not in names:
            return (f" (evaluate.overrides.{parts[2]} names no attack; use an attack's label, preset or "
                    f"name: {', '.join(sorted(names))})")
        rivals = sorted({k for cell in cells for k, v in cell.evaluate.overrides.items()
                         if k != parts[2] and len(parts) == 4 and parts[3] in (v or {})})
        if rivals:
            return (f" (evaluate.overrides.{rivals[0]} also sets {parts[3]}: an attack's label wins over its "
                    f"preset, and its preset over its attack name; sweep the winning key)")
    if parts[0] == "vars" and len(parts) == 2:
        return f" (does any value use ${{{parts[1]}}}? does the scale preset or a --set fix {axis}?)"
    return f" (does the scale preset or a --set fix {axis}?)"


# ---------------------------------------------------------------------------------------------
def read_published(path: Path | None) -> list[dict]:
    """Rows of a published-numbers CSV (section, method, row, param, metric, value)."""
    import csv

    if path is None:
        return []
    if not path.exists():
        raise ConfigError(f"published: {path} does not exist")
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows = []
    for i, row in enumerate(csv.DictReader(lines), start=2):
        try:
            rows.append({"section": row.get("section") or "", "method": row["method"], "row": row["row"],
                         "param": float(row["param"]) if row.get("param") else None,
                         "metric": row.get("metric") or "accuracy", "value": float(row["value"])})
        except (KeyError, ValueError) as err:
            raise ConfigError(f"{path}: data line {i - 1}: {err} (columns: section,method,row,param,metric,value)")
    return rows


def key_lines(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line in the YAML text (for error messages)."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                child = f"{path}[{i}]"
                lines[child] = value.start_mark.line + 1
                walk(value, child)

    if root is not None:
        walk(root, "")
    return lines


def _locate(message: str, path: Path, lines: dict[str, int]) -> str:
    """Prefix ``FILE:LINE:`` when the message starts with a key path that is in the file."""
    match = re.match(r"^([\w.\[\]-]+):", message)
    key = match[1] if match else ""
    if key and key not in lines and "unknown key" in message:
        return f"{path}: {message}"  # the key is not in the file: it came from --set or a scale preset
    while key and key not in lines:
        key = key.rsplit(".", 1)[0] if "." in key else ""
    if key:
        return f"{path}:{lines[key]}: {message}"
    return f"{path}: {message}"
