"""The paper's published numbers: the CSV an experiment file names under ``published:``.

Read when the experiment is stored, so that a report can set our numbers beside the paper's
without opening the file again.
"""

from __future__ import annotations

import csv
from pathlib import Path

from robustloss.errors import ConfigError


def read_published(path: Path | None) -> list[dict]:
    """Rows of a published-numbers CSV (section, method, row, param, metric, value)."""
    if path is None:
        return []
    if not path.exists():
        raise ConfigError(f"published: {path} does not exist")
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows = []
    for i, row in enumerate(csv.DictReader(lines), start=2):
        try:
            rows.append({"section": row.get("section") or "", "method": row["method"], "row": row["row"],
                         "param": float(row["param"]) if row.get("param") else None,
                         "metric": row.get("metric") or "accuracy", "value": float(row["value"])})
        except (KeyError, ValueError) as err:
            raise ConfigError(f"{path}: data line {i - 1}: {err} (columns: section,method,row,param,metric,value)")
    return rows
