"""Point a config error at its line: map each key of the YAML text to the line it is on.

Errors are raised with a dotted key path (``evaluate.attacks[0].eps: ...``) by code that never
sees the file; the loader uses these functions afterwards to prefix ``FILE:LINE:``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


def key_lines(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line in the YAML text (for error messages)."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                child = f"{path}[{i}]"
                lines[child] = value.start_mark.line + 1
                walk(value, child)

    if root is not None:
        walk(root, "")
    return lines


def locate(message: str, path: Path, lines: dict[str, int]) -> str:
    """Prefix ``FILE:LINE:`` when the message starts with a key path that is in the file."""
    match = re.match(r"^([\w.\[\]-]+):", message)
    key = match[1] if match else ""
    if key and key not in lines and "unknown key" in message:
        return f"{path}: {message}"  # the key is not in the file: it came from --set or a scale preset
    while key and key not in lines:
        key = key.rsplit(".", 1)[0] if "." in key else ""
    if key:
        return f"{path}:{lines[key]}: {message}"
    return f"{path}: {message}"
