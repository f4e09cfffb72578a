"""Config dataclasses to and from plain dicts, with typos caught and close matches suggested."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, TypeVar

from omnivis.errors import ConfigError

T = TypeVar("T")


def config_to_dict(config: Any) -> dict:
    """A dataclass config (nested ones included) as a JSON-ready dict."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build ``cls`` from ``data``; an unknown key is a ``ConfigError`` naming the close match.

    Nested dataclass fields are built from nested dicts the same way.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        kind = hints.get(key)
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = config_from_dict(kind, value, where=f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)
