"""Several processes, one job: PyTorch's own distributed engine (``torchrun`` + DDP).

``torchrun --nproc-per-node N robustloss train|eval ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. ``setup`` reads them, joins
the process group (NCCL between GPUs, gloo on CPU) and pins each process to its GPU. Without
those variables (a plain ``robustloss ...``) nothing changes: one process, no process group.

What the rest of robustloss asks of this module:

* ``current()``: the job's ``Distributed`` (rank, world size) or None for a single process;
* ``is_main()``: whether this process writes files, checkpoints and the results store;
* ``gather(obj)``: every rank's object, in rank order, on every rank (``all_gather_object``);
* ``from_main(action)``: rank 0 acts (writes a file, queries the store), every rank gets its
  result or its exception, so all ranks take the same decisions;
* ``any_flag(bool)`` / ``sum_over_ranks``: small all-reduces (a NaN loss must stop every rank,
  or the others would wait forever for its gradients; epoch statistics cover all ranks);
* ``data_parallel``, ``rank_seed``/``rank_generator``, ``my_share``: DDP, per-rank random
  draws that leave the shared generator alone, and round-robin work sharing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_STATE: Distributed | None = None


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str | None = "auto") -> tuple[Distributed | None, str | None]:
    """Join the job's process group when launched by torchrun; returns (state, device to use).

    Each process takes the GPU of its local rank (``cuda:LOCAL_RANK``) when the requested
    device is ``auto`` or ``cuda``; an explicit ``cuda:i`` or ``cpu`` is respected.
    """
    global _STATE
    if not launched_by_torchrun():
        return None, device
    if _STATE is not None:
        return _STATE, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in (None, "auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend)
    _STATE = Distributed(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    return _STATE, device


def teardown(together: bool = True) -> None:
    """Leave the process group. ``together`` (the normal end of a command) first waits for every
    rank: a rank that destroys the group while its peer is still finishing (rank 0 writes the
    report) can abort the peer's gloo threads at exit (SIGABRT). After an error a peer may never
    arrive, so then each rank leaves on its own."""
    global _STATE
    if _STATE is not None and dist.is_initialized():
        try:
            if together:
                dist.barrier()
        finally:
            dist.destroy_process_group()
    _STATE = None


def current() -> Distributed | None:
    return _STATE


def is_main() -> bool:
    return _STATE is None or _STATE.is_main


def barrier() -> None:
    if _STATE is not None:
        dist.barrier()


def gather(obj: Any) -> list[Any]:
    """[rank 0's obj, rank 1's obj, ...] on every rank; [obj] for a single process."""
    if _STATE is None:
        return [obj]
    out: list[Any] = [None] * _STATE.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if _STATE is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_flag(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is True on any (one small all-reduce)."""
    if _STATE is None:
        return bool(flag)
    return bool(sum_over_ranks([float(flag)], device)[0] > 0)


def sum_over_ranks(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Each value summed over the ranks (as is, for a single process)."""
    if _STATE is None:
        return list(values)
    where = device if _STATE.backend == "nccl" else "cpu"  # NCCL reduces GPU tensors, gloo CPU ones
    total = torch.tensor(values, dtype=torch.float64, device=where)
    dist.all_reduce(total)
    return [float(v) for v in total.cpu()]


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` under DistributedDataParallel, on this rank's device."""
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def rank_seed(shared: torch.Generator) -> int:
    """A seed for this epoch's per-rank generators, read from a copy of ``shared`` so that the
    shared stream advances exactly as in one process (same shuffles, same augmentations)."""
    copy = torch.Generator()
    copy.set_state(shared.get_state())
    return int(torch.randint(0, 2**62, (1,), generator=copy))


def rank_generator(epoch_seed: int, step: int) -> torch.Generator:
    """This rank's own generator for one step of an epoch (adversarial draws differ per slice)."""
    rank, world = (_STATE.rank, _STATE.world_size) if _STATE is not None else (0, 1)
    return torch.Generator().manual_seed((epoch_seed + step * world + rank) % 2**63)


def from_main(action) -> Any:
    """Rank 0's result of ``action()`` on every rank (only rank 0 runs it); an exception on rank 0
    is raised on every rank. Every rank must call this at the same point of the program."""
    if _STATE is None:
        return action()
    outcome = None
    if is_main():
        try:
            outcome = ("ok", action())
        except Exception as err:  # noqa: BLE001 - re-raised on every rank below
            outcome = ("error", err)
    kind, value = broadcast(outcome)
    if kind == "error":
        raise value
    return value


def my_share(count: int) -> range:
    """The items (of ``count``, dealt round-robin) this rank works on: all of them alone."""
    if _STATE is None:
        return range(count)
    return range(_STATE.rank, count, _STATE.world_size)
