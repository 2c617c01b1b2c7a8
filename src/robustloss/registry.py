"""A tiny name -> factory registry shared by datasets, models, losses and attacks.

Names are the strings users type in configs and on the command line, so an unknown
name must fail with the list of valid ones rather than a bare KeyError.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Iterator, TypeVar

from robustloss.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class _Required:
    """Marks a parameter without a default in ``Registry.defaults``."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = _Required()


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "loss", "attack", ... used in error messages
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@LOSSES.register("pc")`` on a class or factory function."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` with keyword arguments; unknown keywords fail with the valid ones."""
        factory = self.get(name)
        valid = self.parameters(name)
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {', '.join(unknown)} for {self.kind} {name!r}; "
                f"valid parameters: {', '.join(valid) or '(none)'}"
            )
        signature = inspect.signature(factory)  # type: ignore[arg-type]
        missing = [p.name for p in signature.parameters.values()
                   if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in kwargs]
        if missing:
            raise ConfigError(f"{self.kind} {name!r} needs parameter(s): {', '.join(missing)}")
        return factory(**kwargs)  # type: ignore[operator]

    def parameters(self, name: str) -> list[str]:
        """Keyword parameters accepted by the factory registered as ``name``."""
        signature = inspect.signature(self.get(name))  # type: ignore[arg-type]
        return [p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def defaults(self, name: str) -> dict[str, object]:
        """Keyword parameters of ``name`` with their defaults; a required one maps to ``REQUIRED``."""
        signature = inspect.signature(self.get(name))  # type: ignore[arg-type]
        return {p.name: REQUIRED if p.default is p.empty else p.default for p in signature.parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
