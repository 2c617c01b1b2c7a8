"""What the results store hands back (``RunRow``, ``AnalysisRow``, ``CellRow``) and how Python values
are turned into what its columns hold.

The helpers here are pure: they never touch the database, so the queries, the export and the tests
can share them. JSON is written with sorted keys because several JSON columns are part of a UNIQUE
key; arrays are written as compressed ``.npz`` blobs and read back with ``allow_pickle=False``, so
opening a results file never executes code.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RunRow:
    """One row of ``runs``, its ``config_json`` decoded."""

    id: int
    hash: str
    experiment: str
    name: str
    kind: str
    config: dict
    train_hash: str
    model_dir: str
    run_dir: str
    code_revision: str
    status: str
    error: str | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None


@dataclass
class AnalysisRow:
    """One row of ``analyses``, its JSON columns decoded."""

    id: int
    key: str
    experiment: str
    scale: str
    name: str
    models: dict[str, str]  # label -> train hash (model folder name)
    params: dict
    files: list[str]  # absolute, or relative to the store's folder
    summary: list[dict]
    created_at: str


@dataclass
class CellRow:
    """One row of ``cells``: which run answers a grid cell of an experiment at a scale."""

    experiment: str
    scale: str
    cell: dict
    run_id: int


def _json_default(value: Any) -> Any:
    """The JSON form of the numpy values and paths that configs and summaries carry."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def _canonical(value: Any) -> str:
    """Sorted-key JSON, so that equal dicts give equal strings (params are part of a UNIQUE key)."""
    return json.dumps(value, sort_keys=True, default=_json_default)


def _cell_json(cell: dict) -> str:
    # Axis values are compared as strings, so a cell linked with 0.1 and with "0.1" is the same cell.
    return _canonical({str(k): str(v) for k, v in cell.items()})


def _eps_key(eps: float | None) -> str:
    """``evaluations.eps_key``: a text stand-in for eps, since NULLs never collide in a UNIQUE key."""
    return "none" if eps is None else repr(float(eps))


def _plain(value: Any) -> Any:
    """numpy scalars as Python values: sqlite3 cannot bind np.float32."""
    return value.item() if isinstance(value, np.generic) else value


def _pack(**arrays: np.ndarray) -> bytes:
    """Arrays as one compressed ``.npz`` blob."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


def _unpack(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of a ``_pack`` blob; pickled objects are refused, so reading never runs code."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
