"""Flags and value parsing shared by the commands."""

from __future__ import annotations

import argparse
from typing import Any

from robustloss.config import parse_number
from robustloss.errors import ConfigError


def add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        p.add_argument("--data-dir", help="data root (default: $ROBUSTLOSS_DATA or ~/.cache/robustloss)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (a device this machine does "
                                                    "not have is refused before anything runs)")
    add_progress_flag(p)


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal, or as $ROBUSTLOSS_PROGRESS says; off a "
                        "terminal, one log line per finished epoch, attack or cell)")


def numbers(flag: str, text: str, kind: type, keep_list: bool = False) -> Any:
    """'0.1,0.3' -> [0.1, 0.3]; '0.3' -> 0.3 (or [0.3] with keep_list); floats may be written 1e-3 or 8/255."""
    values = []
    for item in (v.strip() for v in text.split(",")):
        try:
            value = parse_number(item)
        except ValueError:
            value = None
        if value is None or (kind is int and not isinstance(value, int)):
            examples = "" if kind is int else " (0.1, 1e-3, 8/255)"
            raise ConfigError(f"{flag}: expected comma-separated {kind.__name__} values{examples}, got {item!r} "
                              f"in {text!r}")
        values.append(kind(value))
    return values[0] if len(values) == 1 and not keep_list else values
