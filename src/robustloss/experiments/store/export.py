"""Writing the store's export file: the rows ``ResultsStore.export`` gathered, as CSV or JSON.

The store gathers one row per (grid cell, attack record) plus a 'clean' row per cell; this module
only decides how they look on disk, and writes them so that a reader never sees half a file.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TextIO

EXPORT_FORMATS = ("csv", "json")
EXPORT_COLUMNS = ("run_hash", "run_status", "name", "eps", "objective", "n", "accuracy", "mean_linf", "mean_l2")


def write_export(path: str | Path, fmt: str, rows: list[dict]) -> Path:
    """Write ``rows`` to ``path`` in format ``fmt`` (one of ``EXPORT_FORMATS``, checked by the caller).

    The file is written to a temporary name and renamed, so a reader never sees half a file, and an
    export that fails (a full disk) leaves the previous file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if fmt == "json":
                json.dump(rows, f, indent=2)
            else:
                _write_csv(f, rows)
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None or err.filename == str(tmp):  # name the file the user asked for
            err.filename = str(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_csv(f: TextIO, rows: list[dict]) -> None:
    """One CSV line per row: the cell's axes become columns of their own, between scale and the numbers."""
    axes: list[str] = []
    for row in rows:
        axes += [a for a in row["cell"] if a not in axes]
    # An axis named like a fixed column (say "name") would overwrite it; give such axes a prefix.
    fixed = ("experiment", "scale", *EXPORT_COLUMNS)
    axis_columns = {a: f"cell.{a}" if a in fixed else a for a in axes}
    writer = csv.DictWriter(f, fieldnames=["experiment", "scale", *axis_columns.values(), *EXPORT_COLUMNS])
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k != "cell"}
        writer.writerow(flat | {axis_columns[a]: v for a, v in row["cell"].items()})
