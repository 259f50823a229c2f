"""
``each``: the one place that takes "a sync or an async iterable of ids"; ``checked``: the
same, each id checked. Read lazily, one id at a time.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import TypeAlias

from .validate import check_int

__all__ = ["Ids", "checked", "each"]

Ids: TypeAlias = Iterable[int] | AsyncIterable[int]


async def each(ids: Ids) -> AsyncGenerator[int, None]:
    """The ids of a list, a generator or an async iterator, as one async iterator."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Iterable, AsyncIterable)):
        raise TypeError("product_ids must be an iterable or async iterable of ints")
    if isinstance(ids, AsyncIterable):
        async for product_id in ids:
            yield product_id
    else:
        for product_id in ids:
            yield product_id


async def checked(ids: Ids) -> AsyncGenerator[int, None]:
    """
    The ids of *ids*, each a positive ``int``: ``TypeError`` (a ``bool``, a numeric
    string) or ``ValueError`` (below 1) when a bad one is reached.
    """
    values = each(ids)
    try:
        async for value in values:
            yield check_int("product id", value, minimum=1)
    finally:
        # At once, not when the collector gets to it: closing this closes *ids* too.
        await values.aclose()
