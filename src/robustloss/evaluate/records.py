"""Per-sample evaluation records: the single source every table and summary is computed from.

One ``AttackRecord`` per (attack, hyper-parameters, eps) holds, for every evaluated sample:
its index in the test split, true label, clean prediction, adversarial prediction, the
L-inf and L2 size of the perturbation and the model evaluations the attack used.

Accuracy under attack follows the papers' convention: a sample counts as robust only if
the clean image is classified correctly *and* the adversarial image still is; clean
misclassifications are failures.

A stochastic model (a randomised defence) makes every prediction one draw of a random variable.
``redraws`` then repeats each final prediction K times (``clean_redraw_pred`` and each record's
``redraw_pred``, shape (K, n)); ``accuracy_over_draws`` turns them into the mean and spread of the
accuracy over draws. The single-draw arrays stay the headline numbers, as the papers report them.

Records are stored as one ``.npz`` of plain arrays plus JSON metadata (loaded with
``allow_pickle=False``, so opening a results file never executes code), written atomically. Loading
checks the archive's CRC-32s first: a damaged file is refused with ``ResultsFileError``, never read
as numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustloss.checkpoint import archive_damage, atomic_write, remove_stale_temporaries
from robustloss.errors import ResultsFileError

NOT_ATTACKED = -1  # adv_pred of a sample the engine skipped (already broken in worst-case mode)
NOT_SAMPLED = -2  # adv_pred of a sample outside the attack's random subset (``AttackSpec.n_samples``)


@dataclass
class AttackRecord:
    attack: str
    eps: float | None  # None: unbounded (minimum-norm attacks) or no norm budget (noise, rotation)
    params: dict  # the attack's full hyper-parameters, objective included
    adv_pred: np.ndarray  # (n,) int64; NOT_ATTACKED where the sample was skipped, NOT_SAMPLED outside the subset
    linf: np.ndarray  # (n,) float32
    l2: np.ndarray  # (n,) float32
    queries: np.ndarray  # (n,) int64
    seconds: float = 0.0
    norm: str | None = "linf"  # the attack's threat model: "linf", "l2" or None
    label: str = ""  # display name (defaults to the attack name)
    target: np.ndarray | None = None  # (n,) target classes of a targeted attack
    redraw_pred: np.ndarray | None = None  # (K, n) K more predictions of the final images; NOT_ATTACKED where skipped

    @property
    def objective(self) -> str:
        return str(self.params.get("objective", ""))

    @property
    def name(self) -> str:
        return self.label or self.attack

    @property
    def attacked(self) -> np.ndarray:
        return self.adv_pred >= 0

    @property
    def sampled(self) -> np.ndarray:
        """The samples this record speaks for: all of them, or the attack's random subset."""
        return self.adv_pred != NOT_SAMPLED

    def distance(self, norm: str) -> np.ndarray:
        return self.linf if norm == "linf" else self.l2


@dataclass
class Evaluation:
    index: np.ndarray  # (n,) sample ids in the evaluated split
    labels: np.ndarray  # (n,) int64
    clean_pred: np.ndarray  # (n,) int64
    records: list[AttackRecord] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # model, dataset, seed, ... (free-form, JSON-able)
    clean_redraw_pred: np.ndarray | None = None  # (K, n) K more clean predictions of a stochastic model

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def clean_correct(self) -> np.ndarray:
        return self.clean_pred == self.labels

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean()) if self.n else float("nan")

    def robust(self, record: AttackRecord) -> np.ndarray:
        """Per-sample robustness under ``record`` (clean misclassification counts as failure)."""
        return self.clean_correct & (record.adv_pred == self.labels)

    def accuracy(self, record: AttackRecord) -> float:
        """Robust accuracy over the samples the record speaks for (its subset, if it has one)."""
        sampled = record.sampled
        return float(self.robust(record)[sampled].mean()) if sampled.any() else float("nan")

    def fooled(self, record: AttackRecord) -> np.ndarray:
        """Clean-correct samples the attack actually turned wrong (skipped samples excluded)."""
        return self.clean_correct & record.attacked & (record.adv_pred != self.labels)

    def accuracy_over_draws(self, record: AttackRecord | None = None) -> DrawSpread | None:
        """Accuracy (clean when ``record`` is None) over the K redraws: mean, standard deviation and the
        per-draw values; None when there were no redraws. A sample counts as robust in draw d when its
        clean prediction is correct (the headline, single-draw verdict that decided which samples were
        attacked) and the d-th redraw of its adversarial image is still correct."""
        redraws = self.clean_redraw_pred if record is None else record.redraw_pred
        if redraws is None or len(redraws) == 0 or self.n == 0:
            return None
        correct = redraws == self.labels[None, :]
        if record is not None:
            correct = (correct & self.clean_correct[None, :])[:, record.sampled]
        return DrawSpread.of(correct.mean(axis=1))

    def find(self, attack: str, eps: float | None) -> AttackRecord:
        for record in self.records:
            if record.name == attack and _same_eps(record.eps, eps):
                return record
        raise KeyError(f"no record for attack {attack!r} at eps={eps}; have {[(r.name, r.eps) for r in self.records]}")

    def summary(self) -> list[dict]:
        """One row per record: attack, eps, objective, n, robust accuracy and perturbation sizes."""
        rows = [{"attack": "clean", "eps": 0.0, "objective": "", "n": self.n, "accuracy": self.clean_accuracy,
                 "mean_linf": 0.0, "mean_l2": 0.0}]
        for r in self.records:
            fooled = self.fooled(r)
            rows.append({
                "attack": r.name, "eps": r.eps, "objective": r.objective, "n": int(r.sampled.sum()),
                "accuracy": self.accuracy(r),
                "mean_linf": float(r.linf[fooled].mean()) if fooled.any() else 0.0,
                "mean_l2": float(r.l2[fooled].mean()) if fooled.any() else 0.0,
            })
        return rows

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"index": self.index, "labels": self.labels, "clean_pred": self.clean_pred}
        if self.clean_redraw_pred is not None:
            arrays["clean_redraw_pred"] = self.clean_redraw_pred
        for i, r in enumerate(self.records):
            arrays |= {f"r{i}_adv_pred": r.adv_pred, f"r{i}_linf": r.linf, f"r{i}_l2": r.l2, f"r{i}_queries": r.queries}
            if r.target is not None:
                arrays[f"r{i}_target"] = r.target
            if r.redraw_pred is not None:
                arrays[f"r{i}_redraw_pred"] = r.redraw_pred
        meta = {"meta": self.meta, "records": [
            {"attack": r.attack, "eps": r.eps, "params": r.params, "seconds": r.seconds, "norm": r.norm,
             "label": r.label} for r in self.records]}
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        remove_stale_temporaries(path.parent)  # what a save killed mid-write left behind
        return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), mode=0o644)

    @classmethod
    def load(cls, path: str | Path) -> "Evaluation":
        """Read records written by ``save``; a damaged or foreign file raises ``ResultsFileError``."""
        path = Path(path)
        if not path.is_file():
            raise ResultsFileError(f"no evaluation records at {path}")
        damage = archive_damage(path)
        if damage is None:
            try:
                return cls._read(path)
            except Exception as err:  # intact zip, but not the arrays and metadata save() writes
                damage = f"it does not hold robustloss evaluation records ({type(err).__name__}: {err})"
        raise ResultsFileError(f"evaluation records file {path} is damaged: {damage}. Rerun the evaluation that "
                               "wrote it: the same command rewrites it (from its cached chunks where they are kept)")

    @classmethod
    def _read(cls, path: Path) -> "Evaluation":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta_json"].tobytes().decode())
            records = [
                AttackRecord(attack=m["attack"], eps=m["eps"], params=m["params"], seconds=m["seconds"],
                             norm=m.get("norm", "linf"), label=m.get("label", ""),
                             target=data[f"r{i}_target"] if f"r{i}_target" in data.files else None,
                             adv_pred=data[f"r{i}_adv_pred"], linf=data[f"r{i}_linf"], l2=data[f"r{i}_l2"],
                             queries=data[f"r{i}_queries"],
                             redraw_pred=data[f"r{i}_redraw_pred"] if f"r{i}_redraw_pred" in data.files else None)
                for i, m in enumerate(meta["records"])
            ]
            return cls(index=data["index"], labels=data["labels"], clean_pred=data["clean_pred"],
                       records=records, meta=meta["meta"],
                       clean_redraw_pred=data["clean_redraw_pred"] if "clean_redraw_pred" in data.files else None)


@dataclass(frozen=True)
class DrawSpread:
    """An accuracy measured over K random draws of a stochastic model's predictions."""

    draws: int
    mean: float
    std: float  # sample standard deviation over draws (0 for a single draw)
    per_draw: tuple[float, ...]

    @classmethod
    def of(cls, per_draw: np.ndarray) -> "DrawSpread":
        values = tuple(float(v) for v in per_draw)
        std = float(np.std(per_draw, ddof=1)) if len(values) > 1 else 0.0
        return cls(draws=len(values), mean=float(np.mean(per_draw)), std=std, per_draw=values)


def _same_eps(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) < 1e-12
