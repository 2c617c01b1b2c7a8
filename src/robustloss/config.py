"""Strict conversion between plain dicts (YAML/JSON) and config dataclasses, and the one way
robustloss reads YAML and numbers typed by people.

Every error names the offending key by its dotted path (``recipe[1].epochs``), says what
was expected, and for unknown keys lists the valid ones, so a typo in a YAML file points
straight at the line to fix.

Numbers: PyYAML follows YAML 1.1, where ``1e-3``, ``1E3`` and ``1.0e12`` are strings (a float
needs a dot and a signed exponent there). ``YamlLoader`` reads every spelling Python's
``float()`` takes as a number, and ``inf`` as infinity; ``read_yaml_value`` applies it to
``--set``-style command-line values, and ``parse_number`` also takes fractions (``8/255``),
the way papers write budgets. A float field of a config accepts such a fraction as well.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml

from robustloss.errors import ConfigError

C = TypeVar("C")

_FLOAT_TAG = "tag:yaml.org,2002:float"
# What YAML 1.1 calls a float, plus the spellings it leaves as strings: an exponent without a dot
# or without a sign (1e-3, 1E3, 1.0e12), a signed leading dot (-.5), and inf without the dot.
# A dot or an exponent stays required, so 3 is still an int.
_FLOAT = re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.?(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN)
)$""", re.VERBOSE)


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose floats are the numbers a Python user types (see the module docstring)."""


# Copy the resolver table before editing it: SafeLoader's own table is shared by every PyYAML user.
YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+.0123456789iI"))
# The float resolver must win over the int one (both accept a leading digit), as in SafeLoader.
for _resolvers in YamlLoader.yaml_implicit_resolvers.values():
    _resolvers.sort(key=lambda entry: entry[0] != _FLOAT_TAG)


def read_yaml(text: str) -> Any:
    """A YAML document (a string or an open file) with ``YamlLoader``; raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=YamlLoader)  # YamlLoader is a SafeLoader: no arbitrary objects


def read_yaml_value(text: str) -> Any:
    """A command-line value (``--set``, ``--param``, ``--loss-param``) read as YAML: numbers, lists,
    null, true/false; anything YAML cannot parse is kept as the string typed; empty is ""."""
    if not text.strip():
        return ""
    try:
        return read_yaml(text)
    except yaml.YAMLError:
        return text


_FRACTION = re.compile(r"^\s*([-+]?[0-9.eE_+-]+)\s*/\s*([-+]?[0-9.eE_+-]+)\s*$")


def parse_number(text: str) -> int | float:
    """``"3"`` -> 3, ``"1e-3"``/``".5"``/``"-2.0"`` -> floats, ``"8/255"`` -> 8/255, ``"inf"`` -> inf.

    Raises ``ValueError`` (naming the text) for anything else, including NaN and a zero denominator;
    callers decide whether infinity means something for their value.
    """
    stripped = text.strip() if isinstance(text, str) else ""
    try:
        return int(stripped.replace("_", "")) if re.fullmatch(r"[-+]?[0-9][0-9_]*", stripped) else _float(stripped)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a number (e.g. 0.1, 1e-3, 8/255)") from None


def _float(text: str) -> float:
    fraction = _FRACTION.match(text)
    value = float(fraction[1]) / float(fraction[2]) if fraction else float(text)
    if math.isnan(value):
        raise ValueError(text)
    return value


def from_dict(cls: type[C], data: Any, path: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, validating keys and types recursively."""
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"{_join(path, str(key))}: unknown key; valid keys here: {', '.join(fields)}")
    values = {name: _convert(hints[name], data[name], _join(path, name)) for name in data}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain dicts/lists (safe for YAML, JSON and ``torch.load(weights_only=True)``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> Any:
    """A YAML config file ({} when empty); a missing, unreadable or malformed file is a ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            return read_yaml(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected YAML)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_text(err)}") from None


def yaml_error_text(err: yaml.YAMLError) -> str:
    """A PyYAML error on one line: PyYAML spreads it over several, quoting the line with a caret under
    it; the position (line, column) is kept and the file name left to the caller's prefix."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(err).split())
    context = getattr(err, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def check_numeric_parameters(factory: Any, params: dict[str, Any], where: str) -> None:
    """Refuse a non-number for a keyword of ``factory`` (a loss, an attack) whose default is a number:
    ``xi="abc"`` would otherwise fail deep inside it with a comparison error naming neither the
    parameter nor the value. Parameters without a numeric default are left to the factory."""
    import inspect

    accepted = inspect.signature(factory).parameters
    for key, value in params.items():
        default = accepted[key].default if key in accepted else None
        wants_number = isinstance(default, (int, float)) and not isinstance(default, bool)
        if wants_number and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}: {key} expects a number (default {default}), got {value!r}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {hint}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e3 is how many people write a thousand
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # a fraction such as 8/255 (YAML has no syntax for one)
            try:
                return float(parse_number(value))
            except ValueError:
                raise ConfigError(f"{path}: expected a number (e.g. 0.1, 1e-3, 8/255), got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


MAX_LINF_EPS = 1.0  # images live in [0, 1]: an L-inf budget of 1 already allows every image


def check_linf_budget(eps: float | None, where: str) -> None:
    """Refuse an L-inf budget above 1. On [0, 1] images such a budget means the same as 1, so it is
    almost always a budget written in 0-255 units (8 for 8/255); L2 budgets above 1 are ordinary
    (the L2 norm adds up every pixel), so only L-inf is checked."""
    if eps is not None and eps > MAX_LINF_EPS:
        raise ConfigError(f"{where}: L-inf eps {eps:g} is above 1, the whole [0, 1] pixel range; budgets are "
                          f"fractions of it (8/255 = {8 / 255:.4f}), not 0-255 levels")
