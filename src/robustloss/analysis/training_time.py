"""Clean test error against wall-clock training time, per model (MMC paper, Fig. 3a).

The MMC paper plots each model's clean test error against its training time on CIFAR-10 to
show that MMC converges faster than SCE and its variants at little extra cost per step, and
that adversarial training costs far more. The trainer already records what this needs, one row
per epoch, in each model folder's ``metrics.csv``:

* ``seconds``: the epoch's wall-clock time, i.e. the training pass (with the crafting of
  adversarial examples under adversarial training) plus the clean test evaluation after it;
* ``test_acc``: the clean accuracy on the whole test split after the epoch (0..1).

Wall-clock seconds depend on the machine and on whatever else ran on it while the model
trained, so the summary also gives each model's time relative to a reference model (the
first one, SCE in the paper's figure): that ratio is what the paper's claim is about, and
it is what carries over from one machine to another.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

from robustloss.errors import ConfigError

METRICS_FILE = "metrics.csv"  # written by robustloss.train.trainer after every epoch
REQUIRED_COLUMNS = ("epoch", "seconds", "test_acc")


@dataclass
class TrainingCurve:
    """One model's clean test error after each epoch and the wall-clock seconds each epoch took."""

    label: str
    epochs: list[int]
    seconds: list[float]  # wall-clock seconds of each epoch
    test_error: list[float]  # clean test error (%) after each epoch
    phases: list[str]  # the loss each epoch trained with (a recipe may switch losses)

    @property
    def cumulative_seconds(self) -> list[float]:
        return list(itertools.accumulate(self.seconds))

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds)

    @property
    def seconds_per_epoch(self) -> float:
        return self.total_seconds / len(self.seconds)

    @property
    def final_error(self) -> float:
        return self.test_error[-1]

    def seconds_to_reach(self, error: float) -> float | None:
        """Cumulative seconds at the first epoch whose test error is at most ``error`` (None: never)."""
        for elapsed, reached in zip(self.cumulative_seconds, self.test_error):
            if reached <= error:
                return elapsed
        return None


def read_training_curve(folder: str | Path, label: str) -> TrainingCurve:
    """The curve in ``folder/metrics.csv``; a missing file, column or value is named in the error."""
    path = Path(folder) / METRICS_FILE
    if not path.exists():
        raise ConfigError(f"{path}: no such file; the training-time analysis reads the per-epoch metrics "
                          f"that robustloss train writes into every model folder")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ConfigError(f"{path}: no epoch recorded yet")
    missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
    if missing:
        raise ConfigError(f"{path}: no column {', '.join(missing)}; columns: {', '.join(rows[0])}")
    curve = TrainingCurve(label, [], [], [], [])
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            epoch, seconds, accuracy = int(row["epoch"]), float(row["seconds"]), float(row["test_acc"])
        except (TypeError, ValueError):
            raise ConfigError(f"{path}, line {line}: epoch, seconds and test_acc must be numbers, got "
                              f"{row['epoch']!r}, {row['seconds']!r}, {row['test_acc']!r}") from None
        curve.epochs.append(epoch)
        curve.seconds.append(seconds)
        curve.test_error.append(100 * (1 - accuracy))
        curve.phases.append(row.get("phase") or "")
    return curve


def curve_rows(curves: list[TrainingCurve]) -> list[dict]:
    """The plotted points, one row per model and epoch (the analysis's CSV)."""
    rows = []
    for c in curves:
        for epoch, phase, seconds, elapsed, error in zip(c.epochs, c.phases, c.seconds, c.cumulative_seconds,
                                                         c.test_error):
            rows.append({"model": c.label, "epoch": epoch, "phase": phase, "epoch_seconds": round(seconds, 4),
                         "cumulative_seconds": round(elapsed, 4), "test_error_%": round(error, 4)})
    return rows


def reference_curve(curves: list[TrainingCurve], reference: str | None) -> TrainingCurve:
    """The curve the others are timed against: the one labelled ``reference``, else the first."""
    if reference is None:
        return curves[0]
    for c in curves:
        if c.label == reference:
            return c
    raise ConfigError(f"training-time analysis: reference {reference!r} is not one of the models: "
                      f"{', '.join(c.label for c in curves)}")


def summary_rows(curves: list[TrainingCurve], reference: TrainingCurve) -> list[dict]:
    """Per model: final and best error, total and per-epoch seconds, both relative to the reference,
    and the seconds it took to first reach the reference's final error (its convergence speed)."""
    name = reference.label
    rows = []
    for c in curves:
        reached = c.seconds_to_reach(reference.final_error)
        rows.append({
            "model": c.label, "epochs": len(c.epochs), "final error %": round(c.final_error, 2),
            "best error %": round(min(c.test_error), 2), "seconds": round(c.total_seconds, 1),
            "s/epoch": round(c.seconds_per_epoch, 2),
            f"time / {name}": _ratio(c.total_seconds, reference.total_seconds),
            f"s/epoch / {name}": _ratio(c.seconds_per_epoch, reference.seconds_per_epoch),
            f"s to {name}'s final error": "not reached" if reached is None else round(reached, 1),
        })
    return rows


def summary_line(curve: TrainingCurve, reference: TrainingCurve) -> str:
    """What the CLI prints for one model."""
    reached = curve.seconds_to_reach(reference.final_error)
    when = "never" if reached is None else f"after {reached:.1f}s"
    ratio = _ratio(curve.seconds_per_epoch, reference.seconds_per_epoch)
    relative = "" if ratio is None else f", {ratio:.2f}x {reference.label} per epoch"
    return (f"{curve.label}: final clean error {curve.final_error:.2f}% after {len(curve.epochs)} epochs, "
            f"{curve.total_seconds:.1f}s ({curve.seconds_per_epoch:.2f}s/epoch{relative}); "
            f"reaches {reference.label}'s final error {reference.final_error:.2f}% {when}")


def _ratio(value: float, reference: float) -> float | None:
    # A reference that took no measurable time (a hand-written metrics.csv) has no meaningful ratio.
    return round(value / reference, 3) if reference > 0 else None
