"""The options the routes read, checked once when the portal is built."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import attrs

from ._limits import BASKET_MODELS, RESET_ROUNDINGS, BasketModel, ResetRounding

__all__ = ["RouteOptions"]


def _one_of(*choices: str) -> Callable[[object, attrs.Attribute[str], str], None]:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}: {value!r}")

    return check


def _scopes(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"scopes must be a sequence of names, not the string {value!r}")
    return tuple(str(scope).lower() for scope in value)


@attrs.frozen
class RouteOptions:
    """What the routes need to know of a fake portal's options (see :class:`FakePortal`)."""

    page_mode: Literal["source", "offset"] = attrs.field(
        default="source", validator=_one_of("source", "offset")
    )
    operating_billing: Literal["inner", "batch", "both"] = attrs.field(
        default="inner", validator=_one_of("inner", "batch", "both")
    )
    operating_report: Literal["full", "operating", "none"] = attrs.field(
        default="full", validator=_one_of("full", "operating", "none")
    )
    operating_baskets: BasketModel = attrs.field(
        default="first-call", validator=_one_of(*BASKET_MODELS)
    )
    operating_reset_rounding: ResetRounding = attrs.field(
        default="floor", validator=_one_of(*RESET_ROUNDINGS)
    )
    max_request_body: int | None = None
    record_calls: bool = True
    public_files: bool = True
    scopes: tuple[str, ...] = attrs.field(default=("catalog",), converter=_scopes)
    clock_skew: float = 0.0
    batch_writes: bool = True
