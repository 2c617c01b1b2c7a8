"""A folder of finished evaluation chunks, so a killed evaluation resumes where it stopped.

Each (attack, hyper-parameters, eps, batch of samples, model weights, seed) is one chunk,
named by the hash of all of these and written atomically; a re-run loads finished chunks
instead of recomputing them. Nothing is duplicated: the same key always maps to one file.

A chunk is a cache entry, so a damaged one costs only its recomputation: ``load`` checks the
archive (every member's CRC-32, then that numpy can read it), and a chunk that fails is deleted
with a warning and reported missing, so the engine attacks that batch again. Writes go through a
temporary file unique to the writing process (``robustloss.checkpoint.atomic_write``): two
evaluations sharing a cache folder never write into one file, and the cache is cleared of the
temporary files of killed writes when it is opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from robustloss.checkpoint import archive_damage, atomic_write, remove_stale_temporaries

_log = logging.getLogger(__name__)


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the model's weights and buffers (a retrained model never reuses chunks)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class ChunkCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)

    @staticmethod
    def key(**parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The chunk's arrays, or None when it was never written or was damaged (then it is deleted)."""
        path = self.folder / f"{key}.npz"
        if not path.exists():
            return None
        damage = archive_damage(path)
        if damage is None:
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {name: data[name] for name in data.files}
            except Exception as err:  # intact zip but not arrays numpy wrote (e.g. a stray file under this name)
                damage = f"numpy cannot read it ({type(err).__name__}: {err})"
        _log.warning("evaluation chunk %s is damaged (%s); deleted, its batch is recomputed", path, damage)
        path.unlink(missing_ok=True)
        return None

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        atomic_write(self.folder / f"{key}.npz", lambda f: np.savez(f, **arrays), mode=0o644)

    def __len__(self) -> int:
        return len(list(self.folder.glob("*.npz")))
