"""Run an experiment's ``analyses:`` block after its grid, into the experiment's report folder.

Each analysis covers the trained models of the cells it selects (one per distinct model),
labelled by the grid values that tell them apart (e.g. ``CE`` and ``PC-LC``). Outputs go to
``ROOT/reports/analysis/<experiment>-<scale>-<index>-<file>``, and the store records them so
that ``robustloss report`` shows them; an analysis already recorded with the same models and
parameters, whose files are all still there, is not computed again.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from robustloss.experiments.schema import AnalysisSpec, Experiment, RunCell, analysis_cells

if TYPE_CHECKING:
    from robustloss.experiments.runner import ExperimentRunner

ANALYSIS_FOLDER = Path("reports") / "analysis"


def model_labels(cells: list[RunCell]) -> list[str]:
    """Short labels: the values of the axes that differ between the cells (all axes if none do)."""
    axes = list(cells[0].labels) if cells else []
    varying = [a for a in axes if len({c.labels[a] for c in cells}) > 1] or axes
    return [" · ".join(c.labels[a] for a in varying) or "model" for c in cells]


def run_experiment_analyses(runner: ExperimentRunner, experiment: Experiment) -> list[str]:
    """Compute every analysis of the experiment; returns the failures (the others still run)."""
    failures = []
    for index, spec in enumerate(experiment.file.analyses):
        try:
            _run_one(runner, experiment, index, spec)
        except Exception as err:  # reported like a failed cell: the rest of the work is kept
            runner.log(f"  analysis {spec.name} FAILED: {type(err).__name__}: {err}")
            runner.log("".join(traceback.format_exception(err)[-3:]).rstrip())
            failures.append(f"analyses[{index}] ({spec.name}): {err}")
    return failures


def _run_one(runner: ExperimentRunner, experiment: Experiment, index: int, spec: AnalysisSpec) -> None:
    from robustloss.analysis.registry import Subject, run_analysis
    from robustloss.device import resolve_device
    from robustloss.models.saved import load_model
    from robustloss.train.run_folder import MODEL_FILE

    cells = analysis_cells(spec, experiment.cells)
    labels = model_labels(cells)
    models = {label: cell.train_hash for label, cell in zip(labels, cells)}
    params = dict(spec.params) | {"n_test": spec.n_test}
    for row in runner.local_store.analyses(experiment=experiment.name, scale=experiment.scale):
        if (row.name, row.models, row.params) == (spec.name, models, params) and all(
                _resolve(runner.root, f).exists() for f in row.files):
            runner.log(f"analysis {spec.name} ({', '.join(labels)}): done before; reusing it")
            return
    runner.log(f"analysis {spec.name} ({', '.join(labels)})")
    device = resolve_device(runner.device)
    subjects = []
    for label, cell in zip(labels, cells):
        folder = runner.model_dir(cell.train)
        model = load_model(folder / MODEL_FILE)[0].to(device).eval()
        test = runner.dataset(cell.train.dataset).test
        if spec.n_test is not None:
            test = test.subset(slice(0, spec.n_test))
        subjects.append(Subject(label, model, test, device, key=cell.train_hash, folder=folder))
    out = runner.root / ANALYSIS_FOLDER
    prefix = f"{experiment.name}-{experiment.scale}-{index}-"
    result = run_analysis(spec.name, subjects, out, prefix=prefix, **spec.params)
    for line in result.lines:
        runner.log(f"  {line}")
    runner.local_store.save_analysis(name=spec.name, models=models, params=params,
                               files=[str(p.relative_to(runner.root)) for p in result.files],
                               summary=result.summary, experiment=experiment.name, scale=experiment.scale)


def _resolve(root: Path, file: str) -> Path:
    path = Path(file)
    return path if path.is_absolute() else root / path

