"""The training states a run folder keeps, and which one a resume starts from.

While a run trains, ``checkpoints/`` holds the state after the latest finished epoch (``last.pt``)
and the one before it (``previous.pt``): each epoch's save renames the old ``last.pt`` to
``previous.pt`` once the new state is safely on disk. A resume loads the newest intact one:

* ``last.pt`` damaged (every read is verified, ``robustloss.checkpoint.safe_load``): the run resumes
  from ``previous.pt`` and redoes one epoch. Training is deterministic, so the result is the same;
  the damaged file is deleted (the next save would otherwise keep it as ``previous.pt``).
* ``last.pt`` missing but ``previous.pt`` present: a kill landed between the two renames; same thing.
* nothing intact: the resume is refused with the files named and what to do.

``previous.pt`` is deleted once ``model.pt`` is written: a finished run's model no longer depends on
it, and a second copy of every finished run's training state would double the disk it takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from robustloss.checkpoint import atomic_save, remove_stale_temporaries, safe_load
from robustloss.errors import CheckpointError

LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
PREVIOUS_CHECKPOINT = Path("checkpoints") / "previous.pt"


def save_epoch_state(state: dict[str, Any], run_dir: Path) -> Path:
    """Write ``last.pt``, keeping the state it replaces as ``previous.pt``."""
    return atomic_save(state, run_dir / LAST_CHECKPOINT, keep_previous=run_dir / PREVIOUS_CHECKPOINT)


def drop_previous_state(run_dir: Path) -> None:
    (run_dir / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)


def remove_leftovers(run_dir: Path, log: Callable[[str], None]) -> None:
    """Delete the temporary files of writes that a kill interrupted (``remove_stale_temporaries``)."""
    for folder in (run_dir, run_dir / LAST_CHECKPOINT.parent):
        removed = remove_stale_temporaries(folder)
        if removed:
            log(f"removed {len(removed)} temporary file(s) left by an interrupted write: "
                + ", ".join(str(p) for p in removed))


def load_resume_state(run_dir: Path, map_location: str | torch.device, log: Callable[[str], None], *,
                      writer: bool) -> tuple[dict[str, Any], Path] | None:
    """(the newest intact training state, its file), or None when the run has none yet. ``writer``:
    this process may delete a damaged ``last.pt`` (only rank 0 writes under torchrun)."""
    last, previous = run_dir / LAST_CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    candidates = [path for path in (last, previous) if path.exists()]
    if not candidates:
        return None
    problems = []
    for path in candidates:
        try:
            state = safe_load(path, map_location=map_location, remedy="")
        except CheckpointError as err:
            problems.append(str(err).rstrip("."))
            continue
        if problems:
            log(f"warning: {problems[0]}; resuming from the epoch before it ({path}) instead")
            if writer:
                last.unlink(missing_ok=True)
        return state, path
    named = " and ".join(str(path) for path in candidates)
    also = "" if previous.exists() else f" (no {PREVIOUS_CHECKPOINT.name} is kept to fall back on)"
    raise CheckpointError(f"cannot resume {run_dir}: {'; '.join(problems)}{also}. Delete {named} and rerun with "
                          "--resume to restart the run from its first epoch, or train into a new --out")
