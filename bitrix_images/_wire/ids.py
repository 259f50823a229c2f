"""``each_id``: product ids from a sync or async iterable, checked, read lazily."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable

from .validate import check_int

__all__ = ["each_id"]


async def each_id(
    source: Iterable[int] | AsyncIterable[int], *, unique: bool = False
) -> AsyncGenerator[int, None]:
    """
    The ids of *source* (an iterable or async iterable), each a positive ``int``, read one at a
    time as they are asked for. With *unique*, an id already given is skipped.

    Raises ``TypeError`` (not an iterable of ids; a ``bool`` or numeric string) or
    ``ValueError`` (an id below 1) when the bad value is reached.
    """
    if isinstance(source, (str, bytes)) or not isinstance(source, (Iterable, AsyncIterable)):
        raise TypeError("product_ids must be an iterable or async iterable of ints")
    seen: set[int] | None = set() if unique else None
    if isinstance(source, AsyncIterable):
        async for value in source:
            product_id = check_int("product id", value, minimum=1)
            if seen is None or _first(seen, product_id):
                yield product_id
    else:
        for value in source:
            product_id = check_int("product id", value, minimum=1)
            if seen is None or _first(seen, product_id):
                yield product_id


def _first(seen: set[int], product_id: int) -> bool:
    if product_id in seen:
        return False
    seen.add(product_id)
    return True
