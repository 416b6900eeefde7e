"""The one style of value check: `<key>=<value> is not allowed; expected <what is allowed>` as a UserError.

Configs, balancers, encoders and curricula all check their options with these functions, so every bad
value gets the same one-line message whether it comes from the CLI or from library code.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping, Sequence, TypeVar

from mtrl.errors import UserError

T = TypeVar("T")


def fail(key: str, value: Any, allowed: str) -> UserError:
    """The error for `key=value`, naming what is allowed (raise it)."""
    return UserError(f"{key}={value!r} is not allowed; expected {allowed}")


def _range(low: float | None, high: float | None, strict_low: bool = False, strict_high: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if strict_low else '['}{low:g}, {high:g}{')' if strict_high else ']'}"
    if low is not None:
        return f" {'>' if strict_low else '>='} {low:g}"
    if high is not None:
        return f" {'<' if strict_high else '<='} {high:g}"
    return ""


def integer(key: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int within [low, high] (bounds optional); bools and floats are refused."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        raise fail(key, value, f"an integer{_range(low, high)}")
    return int(value)


def number(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    strict_low: bool = False,
    strict_high: bool = False,
) -> float:
    """`value` as a finite float within the bounds (strict_* excludes that bound)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict_low else value >= low
    if ok and high is not None:
        ok = value < high if strict_high else value <= high
    if not ok:
        raise fail(key, value, f"a finite number{_range(low, high, strict_low, strict_high)}")
    return float(value)


def choice(key: str, value: T, choices: Sequence[T]) -> T:
    """`value` if it is one of `choices`."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices) or value not in choices:
        raise fail(key, value, f"one of {', '.join(map(str, choices))}")
    return value


def flag(key: str, value: Any) -> bool:
    """`value` if it is true or false."""
    if not isinstance(value, bool):
        raise fail(key, value, "true or false")
    return value


def sizes(key: str, value: Any, min_len: int = 1) -> list[int]:
    """A list of at least `min_len` positive integers (layer widths)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) < min_len:
        raise fail(key, value, f"a list of at least {min_len} positive integer(s)")
    return [integer(f"{key}[{i}]", v, 1) for i, v in enumerate(value)]


def unknown_keys(where: str, given: Sequence[str], allowed: Sequence[str]) -> None:
    """Refuse keys that are not allowed, suggesting the nearest allowed key."""
    import difflib

    unknown = [k for k in given if k not in allowed]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(allowed), n=1)
        hint = f" (did you mean {where}{close[0]}?)" if close else ""
        raise UserError(f"unknown option {where}{key}{hint}; allowed: {', '.join(sorted(allowed)) or 'none'}")


def build_dataclass(cls: type[T], prefix: str, values: Mapping[str, Any] | None) -> T:
    """`cls(**values)` after refusing keys that are not fields of the dataclass `cls` (named `<prefix>.<key>`)."""
    values = dict(values or {})
    fields = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown_keys(f"{prefix}." if prefix else "", list(values), fields)
    return cls(**values)
