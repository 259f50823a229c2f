"""
The argument checks every public entry point shares, with one rule for their errors.

A value of the wrong *type* (a ``bool`` where an int is wanted, a numeric string) raises
``TypeError``; a value of the right type but out of range (negative, zero, NaN, infinite)
raises ``ValueError``. Both name the argument and are raised before any request is sent.
"""

from __future__ import annotations

import math

__all__ = ["check_int", "check_number"]


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """An ``int`` (never a ``bool``), at least *minimum* when one is given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    positive: bool = False,
    finite: bool = False,
) -> float:
    """
    A real number (not a bool, not a numeric string), within the bounds asked for.

    *minimum* is inclusive, *positive* means strictly above zero; NaN fails either bound,
    because every comparison with it is false.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if minimum is not None and not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value
