"""
``each``: the one place that takes "a sync or an async iterable of ids", read lazily, one
id at a time.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import TypeAlias

from .validate import check_int

__all__ = ["Ids", "each"]

Ids: TypeAlias = Iterable[int] | AsyncIterable[int]


async def each(ids: Ids, *, check: bool = False) -> AsyncGenerator[int, None]:
    """
    The ids of a list, a generator or an async iterator, as one async iterator.

    With *check*, each id must be a positive ``int``: ``TypeError`` (a ``bool``, a numeric
    string) or ``ValueError`` (below 1) when a bad one is reached.
    """
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Iterable, AsyncIterable)):
        raise TypeError("product_ids must be an iterable or async iterable of ints")
    if isinstance(ids, AsyncIterable):
        async for value in ids:
            yield check_int("product id", value, minimum=1) if check else value
    else:
        for value in ids:
            yield check_int("product id", value, minimum=1) if check else value
