"""A folder of finished evaluation chunks, so a killed evaluation resumes where it stopped.

Each (attack, hyper-parameters, eps, batch of samples, model weights, seed) is one chunk,
named by the hash of all of these and written atomically; a re-run loads finished chunks
instead of recomputing them. Nothing is duplicated: the same key always maps to one file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch


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

    @staticmethod
    def key(**parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.folder / f"{key}.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        tmp = self.folder / f".{key}.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(self.folder / f"{key}.npz")

    def __len__(self) -> int:
        return len(list(self.folder.glob("*.npz")))
