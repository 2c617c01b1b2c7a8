"""One (attack, eps) of a plan, batch by batch: how the engine (``robustloss.evaluate.engine``) turns an
attack at one budget into an ``AttackRecord``.

The samples to attack are cut into batches of the evaluation's batch size. Every batch draws its random
numbers from its own seed, derived from the evaluation seed, the attack, the budget and the batch's first
sample. A batch therefore gives the same result whichever process attacks it and whenever it does, which
is what lets a finished batch be kept in the ``ChunkCache`` and the batches be dealt to the ranks under
``torchrun``. The engine's module docstring gives the rules these steps follow.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustloss import distributed
from robustloss.checkpoint import atomic_save, remove_stale_temporaries
from robustloss.data.split import ImageSplit
from robustloss.evaluate.chunk_cache import ChunkCache
from robustloss.evaluate.config import AttackSpec, EvaluateConfig
from robustloss.evaluate.records import NOT_ATTACKED, NOT_SAMPLED, AttackRecord
from robustloss.models.predict import predict
from robustloss.progress import show_progress


@dataclass(frozen=True)
class PlanContext:
    """What every (attack, eps) of one evaluation shares: the model, the data, the settings and where
    results go. The engine builds it once per plan; the per-attack functions read it instead of a long
    argument list. Frozen, so no attack can change what the next one sees; ``batches_per_rank`` is the
    one thing that grows, a log of how each attack's batches were dealt under torchrun."""

    model: nn.Module
    split: ImageSplit
    config: EvaluateConfig
    device: torch.device
    num_classes: int
    cache: ChunkCache | None
    fingerprint: str  # of the model's weights, for the cache keys; "" without a cache
    save_adversarial: Path | None
    progress: bool | None
    redraws: int
    batches_per_rank: list = field(default_factory=list)  # under torchrun: how the batches of each attack were dealt


@dataclass(frozen=True)
class _Job:
    """One attack at one budget, with what is worked out once for all its batches."""

    spec: AttackSpec
    attack: object  # the built attack: callable on (model, x, y), with norm, targeted, hyperparameters()
    eps: float | None
    precision: str  # "fp32" for a minimum-norm attack whatever the evaluation's precision
    hyperparameters: dict  # part of every batch's cache key

    @property
    def shown(self) -> str:
        return "-" if self.eps is None else f"{self.eps:g}"


@dataclass
class _Outputs:
    """The per-sample arrays of one (attack, eps), filled in batch by batch. A sample that no batch
    covers keeps its mark: not attacked, or outside the attack's subset."""

    arrays: dict[str, np.ndarray]
    redraw_pred: np.ndarray | None
    objective: str | None  # the attack's own until a batch reports the one it chose
    saved_index: list = field(default_factory=list)
    saved_images: list = field(default_factory=list)

    @classmethod
    def empty(cls, n: int, sampled: np.ndarray, redraws: int, objective: str | None) -> _Outputs:
        arrays = {"adv_pred": np.where(sampled, NOT_ATTACKED, NOT_SAMPLED).astype(np.int64),
                  "linf": np.full(n, np.nan, dtype=np.float32), "l2": np.full(n, np.nan, dtype=np.float32),
                  "queries": np.zeros(n, dtype=np.int64), "target": np.full(n, NOT_ATTACKED, dtype=np.int64)}
        redraw_pred = np.full((redraws, n), NOT_ATTACKED, dtype=np.int64) if redraws else None
        return cls(arrays, redraw_pred, objective)

    def add(self, idx: np.ndarray, chunk: dict[str, np.ndarray], keep_images: bool) -> None:
        for name in self.arrays:
            self.arrays[name][idx] = chunk[name]
        if self.redraw_pred is not None:
            self.redraw_pred[:, idx] = chunk["redraw_pred"]
        self.objective = str(chunk["objective"]) if "objective" in chunk else self.objective
        if keep_images:
            self.saved_index.append(idx[chunk["fooled"]])
            self.saved_images.append(chunk["x_adv"])


def run_attack(context: PlanContext, attack, spec: AttackSpec, eps: float | None, indices: np.ndarray,
               sampled: np.ndarray, batch_over: np.ndarray | None = None) -> AttackRecord:
    """The record of ``attack`` (``spec`` built at ``eps``) on the samples at ``indices``; ``sampled``
    marks the samples the record speaks for (the attack's subset, or all of them).

    ``batch_over`` (a superset of ``indices``) is what the batches are cut from when it is not
    ``indices`` itself: an attack that never queries the model is run on batches that do not depend on
    the model, so that every target gets the same examples (see the engine); the record keeps only
    ``indices``."""
    # minimum-norm attacks (no budget) always run in fp32: see the engine's module docstring
    precision = context.config.precision if eps is not None else "fp32"
    outputs = _Outputs.empty(len(context.split), sampled, context.redraws, attack.objective_name)
    job = _Job(spec, attack, eps, precision, attack.hyperparameters())
    batch_over = indices if batch_over is None else batch_over
    started = time.perf_counter()
    for start, chunk in _attack_batches(context, job, batch_over):
        idx = batch_over[start : start + context.config.batch_size]
        keep = np.isin(idx, indices)
        if not keep.all():
            idx, chunk = idx[keep], _chunk_rows(chunk, keep)
        outputs.add(idx, chunk, keep_images=context.save_adversarial is not None)
    record = _record(job, outputs, started)
    if context.save_adversarial is not None and distributed.is_main():
        _save_examples(context.save_adversarial, record, context.split, outputs.saved_index, outputs.saved_images)
    return record


def _chunk_rows(chunk: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``keep`` of a batch's results (saved images are stored for the fooled rows only)."""
    rows = {}
    for name, value in chunk.items():
        if name == "objective":
            rows[name] = value
        elif name == "redraw_pred":
            rows[name] = value[:, keep]
        elif name == "x_adv":
            rows[name] = value[keep[chunk["fooled"]]]
        else:
            rows[name] = value[keep]
    return rows


def _attack_batches(context: PlanContext, job: _Job, indices: np.ndarray) -> list[tuple[int, dict]]:
    """(offset into ``indices``, chunk) for every batch, in order. This process attacks its share of the
    batches (all of them outside torchrun); under torchrun the shares are then gathered, so that every rank
    holds every batch."""
    batch_size = context.config.batch_size
    starts = list(range(0, len(indices), batch_size))
    mine = [starts[i] for i in distributed.my_share(len(starts))]  # all of them in a single process
    done: list[tuple[int, dict]] = []
    for start in tqdm(mine, desc=f"{job.spec.name} eps={job.shown}", leave=False,
                      disable=not show_progress(context.progress) or not distributed.is_main()):
        done.append((start, _cached_chunk(context, job, indices[start : start + batch_size])))
    if distributed.current() is not None:  # every rank's batches, on every rank, in the original order
        shares = distributed.gather(done)
        context.batches_per_rank.append([len(share) for share in shares])
        done = sorted((pair for share in shares for pair in share), key=lambda pair: pair[0])
    return done


def _cached_chunk(context: PlanContext, job: _Job, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The batch ``idx`` attacked: from the cache when an earlier run finished it, else attacked now (and
    then cached)."""
    batch_seed = _derived_seed(context.config.seed, job.spec.name, job.eps, int(idx[0]))
    # precision joins the key only when it is not fp32, so caches written before it existed stay valid
    key = ChunkCache.key(attack=job.spec.name, params=job.hyperparameters, eps=job.eps, seed=batch_seed,
                         index=zlib.crc32(idx.tobytes()), n=len(idx), model=context.fingerprint,
                         with_images=context.save_adversarial is not None, targets=job.spec.targets,
                         **({"precision": job.precision} if job.precision != "fp32" else {}),
                         **({"redraws": context.redraws} if context.redraws else {}))
    chunk = context.cache.load(key) if context.cache is not None else None
    if chunk is None:
        chunk = _attack_chunk(context, job, idx, batch_seed)
        if context.cache is not None:
            context.cache.save(key, chunk)
    return chunk


def _attack_chunk(context: PlanContext, job: _Job, idx: np.ndarray, batch_seed: int) -> dict[str, np.ndarray]:
    """Attack one batch: its per-sample results, the redrawn predictions of a stochastic model, and
    with ``save_adversarial`` the adversarial examples that fooled the model."""
    attack, model, device, num_classes = job.attack, context.model, context.device, context.num_classes
    x, y = context.split.batch(torch.from_numpy(idx))
    generator = torch.Generator().manual_seed(batch_seed)
    target = None
    if attack.targeted:
        if job.spec.targets == "next":
            target = (y + 1) % num_classes
        else:  # a uniformly random wrong class
            target = (y + torch.randint(1, num_classes, y.shape, generator=generator)) % num_classes
    with seeded_global_rng(batch_seed, device):  # a random model's draws are reproducible per batch
        result = attack(model, x.to(device), y.to(device), target=None if target is None else target.to(device),
                        generator=generator, precision=job.precision)
    adv_pred = result.pred.cpu().numpy()
    chunk = {"adv_pred": adv_pred, "linf": result.linf.cpu().float().numpy(), "l2": result.l2.cpu().float().numpy(),
             "queries": result.queries.cpu().numpy(), "objective": np.array(result.objective),
             "target": (target.numpy() if target is not None else np.full(len(idx), NOT_ATTACKED, dtype=np.int64))}
    if context.redraws:
        with seeded_global_rng(batch_seed + 1, device):
            chunk["redraw_pred"] = np.stack([predict(model, result.x_adv, device=device).numpy()
                                             for _ in range(context.redraws)])
    if context.save_adversarial is not None:
        fooled = adv_pred != y.numpy()
        x_adv = result.x_adv[torch.from_numpy(fooled).to(result.x_adv.device)].cpu().numpy()
        chunk |= {"fooled": fooled, "x_adv": x_adv}
    return chunk


def _record(job: _Job, outputs: _Outputs, started: float) -> AttackRecord:
    attack, spec, out = job.attack, job.spec, outputs.arrays
    params = _record_params(job, outputs.objective)
    attack_name = spec.resolved()[0]
    label = spec.label or (spec.attack if spec.attack != attack_name else "")  # a preset keeps its own name
    return AttackRecord(attack=attack_name, eps=job.eps, params=params, seconds=time.perf_counter() - started,
                        norm=attack.norm, label=label,
                        adv_pred=out["adv_pred"], linf=out["linf"], l2=out["l2"], queries=out["queries"],
                        target=out["target"] if attack.targeted else None, redraw_pred=outputs.redraw_pred)


def _record_params(job: _Job, objective: str | None) -> dict:
    """The attack's hyper-parameters plus what the run settled: the objective the attack chose when it
    differs from the one asked for, the targets of a targeted attack, and a precision other than fp32."""
    params = dict(job.hyperparameters)
    if objective and objective != params.get("objective"):
        params |= {"objective": objective, "objective_requested": params.get("objective")}
    if job.attack.targeted:
        params["targets"] = job.spec.targets
    if job.precision != "fp32":
        params["precision"] = job.precision
    return params


@contextlib.contextmanager
def seeded_global_rng(seed: int, device):
    """Run the block under a fork of the global torch RNG (CPU, and the CUDA device in use) seeded with
    ``seed``; the caller's random stream is left exactly as it was."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:  # only the device forked above: torch.manual_seed would also reseed every other GPU
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _save_examples(folder: Path, record: AttackRecord, split: ImageSplit, index: list, images: list) -> Path:
    index_all = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
    images_all = np.concatenate(images) if images else np.zeros((0, *split.images.shape[1:]), dtype=np.float32)
    eps = "none" if record.eps is None else f"{record.eps:g}"
    remove_stale_temporaries(folder)  # what a killed earlier save left (up to a whole file of images)
    return atomic_save(
        {"index": torch.from_numpy(index_all), "x_adv": torch.from_numpy(images_all),
         "label": split.labels[torch.from_numpy(index_all)], "adv_pred": torch.from_numpy(record.adv_pred[index_all]),
         "attack": record.name, "eps": record.eps, "params": {k: str(v) for k, v in record.params.items()}},
        folder / f"{record.name}_eps{eps}.pt",
    )


def _derived_seed(seed: int, attack: str, eps: float | None, first_index: int) -> int:
    shown = "none" if eps is None else f"{eps:.10g}"
    return (seed * 1_000_003 + zlib.crc32(f"{attack}|{shown}|{first_index}".encode())) % (2**63)
