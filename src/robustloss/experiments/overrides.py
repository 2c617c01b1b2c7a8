"""Dotted-key overrides (``train.optimizer.lr=0.1``) and ``${...}`` substitution on plain dicts.

Both work on the YAML document before it is validated, so a typo in an override is caught
by the same strict validation as a typo in the file.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from robustloss.config import parse_number, read_yaml_value
from robustloss.errors import ConfigError

_INDEX = re.compile(r"^(?P<key>[^\[\]]*)\[(?P<index>\d+)\]$")


def split_path(path: str) -> list[str | int]:
    """``recipe[1].epochs`` -> ["recipe", 1, "epochs"]."""
    parts: list[str | int] = []
    for piece in path.split("."):
        match = _INDEX.match(piece)
        if match:
            if match["key"]:
                parts.append(match["key"])
            parts.append(int(match["index"]))
        elif piece:
            parts.append(piece)
        else:
            raise ConfigError(f"{path!r}: empty key in dotted path")
    return parts


def set_dotted(document: dict, path: str, value: Any) -> None:
    """Set ``document[a][b]...`` for ``path`` "a.b...", creating mappings on the way."""
    parts = split_path(path)
    node: Any = document
    for i, part in enumerate(parts[:-1]):
        where = ".".join(map(str, parts[: i + 1]))
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"{path}: {where} is not an existing list entry")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: cannot set a key inside {where}, which is a {type(node).__name__}")
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"{path}: index {last} is out of range")
        node[last] = copy.deepcopy(value)
    elif isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    else:
        raise ConfigError(f"{path}: cannot set a key inside a {type(node).__name__}")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key.path=value`` from the command line; the value is read as YAML (numbers such as 1e-3 or
    .5, lists, null) by the same loader as experiment files, so ``--set`` and a file agree."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY.PATH=VALUE, e.g. train.optimizer.lr=0.1; got {text!r}")
    split_path(key.strip())  # an empty key (a..b, trailing dot) is refused here, naming the assignment
    return key.strip(), read_yaml_value(raw)


_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_NUMBER = re.compile(r"^(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def substitute(value: Any, variables: dict[str, Any], path: str = "") -> Any:
    """Replace ``${expr}`` in every string of ``value``.

    ``expr`` is a product/quotient of numbers and variable names (``T``, ``2*T``, ``8/255``); no
    other syntax is evaluated. A string that is only ``${expr}`` becomes the number itself (an
    int when every factor is an int and nothing is divided); a string that is only ``${NAME}`` with
    NAME null becomes null.
    """
    if isinstance(value, dict):
        return {k: substitute(v, variables, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _REFERENCE.fullmatch(value.strip())
    if whole:
        name = whole[1].strip()
        if name in variables and variables[name] is None:
            return None  # ``${X}`` with X null: an option left unset (e.g. a head's embed_dim)
        return _evaluate(whole[1], variables, path)
    return _REFERENCE.sub(lambda m: f"{_evaluate(m[1], variables, path):g}", value)


def _evaluate(expression: str, variables: dict[str, Any], path: str) -> int | float:
    tokens = re.split(r"\s*([*/])\s*", expression.strip())
    result = _operand(tokens[0], variables, path, expression)
    for operator, token in zip(tokens[1::2], tokens[2::2]):
        operand = _operand(token, variables, path, expression)
        if operator == "*":
            result = result * operand
        else:
            if operand == 0:
                raise ConfigError(f"{path}: division by zero in ${{{expression}}}")
            result = result / operand
    return result


def _operand(token: str, variables: dict[str, Any], path: str, expression: str) -> int | float:
    if _NUMBER.match(token):
        return float(token) if any(c in token for c in ".eE") else int(token)
    if token in variables:
        value = variables[token]
        if isinstance(value, str):  # a fraction such as 8/255 given with --set vars.EPS=8/255
            try:
                value = parse_number(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"vars.{token}: expected a number, got {value!r}")
        return value
    known = ", ".join(sorted(variables)) or "none defined"
    raise ConfigError(f"{path}: ${{{expression}}} uses unknown variable {token!r}; vars: {known}")
