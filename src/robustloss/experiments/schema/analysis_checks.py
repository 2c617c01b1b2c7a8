"""The ``analyses:`` block against the resolved cells: which models an analysis covers, and
whether its name, parameters and model selection are valid.

``analysis_cells`` is the selection itself; the runner uses it to pick the models, and the check
uses it to refuse a selection that matches none. The analysis registry is imported at the top:
the analysis layer sits below experiments and never imports it, so this makes no cycle.
"""

from __future__ import annotations

from robustloss.analysis.registry import analysis_names, analysis_parameters
from robustloss.errors import ConfigError
from robustloss.experiments.schema.blocks import AnalysisSpec, RunCell


def check_analysis(spec: AnalysisSpec, cells: list[RunCell], where: str) -> None:
    """A registered analysis, with parameters it takes, over models that exist in the grid."""
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
