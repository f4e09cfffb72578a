"""Request parameters, checked before any work is done: the type, the range, and the name of the field
that is wrong. JSON gives real types; form fields and query strings give text, parsed here."""

from __future__ import annotations

import math

from omnivis.serve.api_errors import ApiError


def _given(params: dict, name: str, default):
    """The value of ``name``; absent and JSON ``null`` both mean the default (as OpenAI's API reads them)."""
    value = params.get(name)
    return default if value is None else value


def integer(params: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = _given(params, name, default)
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > 40:
            raise ApiError(422, f"'{name}' must be an integer, got {len(value)} characters", name)
        try:
            value = int(value.strip())
        except ValueError:
            raise ApiError(422, f"'{name}' must be an integer, got '{value[:40]}'", name) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"'{name}' must be an integer, got {type(value).__name__}", name)
    if not low <= value <= high:
        raise ApiError(422, f"'{name}' must be in {low}..{high}, got {str(value)[:40]}", name)
    return value


def number(params: dict, name: str, default: float | None, low: float, high: float) -> float | None:
    value = _given(params, name, default)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ApiError(422, f"'{name}' must be a number, got '{value[:40]}'", name) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(422, f"'{name}' must be a number, got {type(value).__name__}", name)
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(422, f"'{name}' must be a finite number in {low:g}..{high:g}, got {value}", name)
    return float(value)


def flag(params: dict, name: str, default: bool = False) -> bool:
    value = _given(params, name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ApiError(422, f"'{name}' must be true or false, got {str(value)[:40]!r}", name)


def text(params: dict, name: str, default: str | None = None, max_len: int = 1000) -> str | None:
    value = _given(params, name, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, f"'{name}' must be a string, got {type(value).__name__}", name)
    if len(value) > max_len:
        raise ApiError(422, f"'{name}' is {len(value)} characters; the limit is {max_len}", name)
    return value


def only_known(params: dict, known: set[str]) -> None:
    """An unknown field is an error, not silently ignored: a typo would otherwise give a default answer."""
    unknown = sorted(set(params) - known)
    if unknown:
        raise ApiError(422, f"unknown field '{unknown[0]}'; this endpoint takes: {', '.join(sorted(known))}", unknown[0])
