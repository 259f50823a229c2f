"""
``Page`` and ``AsyncPaginator``: any ``start``-paged Bitrix list, one page held at a time.

The loop follows the portal's own ``next`` and nothing else (list-methods-pecularities.md).
It never assumes 50-item pages and never sends a confirming request at ``start=total``:
``catalog.productImage.list`` answers every image at once and ignores ``start``
(bitrix24-protocol.md §1.3), so such a request would fetch everything again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs

from ._calls.caller import Caller
from ._wire.protocol import items_of
from ._wire.validate import check_int
from .exceptions import MalformedResponse

__all__ = ["AsyncPaginator", "Page", "paginate"]

T = TypeVar("T")


@attrs.frozen
class Page(Generic[T]):
    """
    One answer of a list method.

    Attributes:
        items: the items of this page.
        total: the portal's ``total``, or ``None`` when it sent none (``start=-1``).
        next: the ``start`` of the following page, or ``None`` on the last one.
        start: the ``start`` this page was requested with.
    """

    items: tuple[T, ...]
    total: int | None
    next: int | None
    start: int = 0


class AsyncPaginator(Generic[T]):
    """
    Async-iterable over the items of a paged list; ``.pages()`` iterates the pages.

    Each iteration starts again from *start*: pass ``start=page.next`` to resume an
    interrupted walk. Only the current page is held in memory.
    """

    def __init__(
        self, fetch: Callable[[int], Awaitable[Page[T]]], *, start: int = 0, method: str
    ) -> None:
        self._fetch = fetch
        self._start = start
        self._method = method

    async def pages(self) -> AsyncIterator[Page[T]]:
        """Yield pages from *start* until the portal sends no ``next``."""
        start = self._start
        while True:
            page = await self._fetch(start)
            yield page
            if page.next is None:
                return
            if page.next <= start:
                # A portal that repeats a page would loop forever (b24jssdk #484); stop loudly.
                raise MalformedResponse(
                    f"the portal sent next={page.next} after start={start}; "
                    "stopping instead of looping",
                    method=self._method,
                )
            start = page.next

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item

    def __repr__(self) -> str:
        return f"AsyncPaginator({self._method}, start={self._start})"


def paginate(
    caller: Caller,
    method: str,
    params: Callable[[int], Mapping[str, object]],
    *,
    key: str,
    convert: Callable[[list[Any]], Sequence[T]],
    start: int,
) -> AsyncPaginator[T]:
    """
    Walk *method* from *start*: each page's call takes ``params(offset)``, its items are the
    list under *key* in the result, made into values by *convert*.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("key must name the list in the result, like 'products'")
    start = check_int("start", start, minimum=0)

    async def fetch(offset: int) -> Page[T]:
        envelope = await caller.call(method, params(offset))
        items = convert(items_of(envelope.result, key, method=method))
        return Page(tuple(items), total=envelope.total, next=envelope.next, start=offset)

    return AsyncPaginator(fetch, start=start, method=method)
