"""
Where product ids come from: a list, a products file, a whole catalog; shards and counts.

Every source is read lazily, one id at a time, so that a catalog of millions costs no
memory; ``each`` is the one place that takes "a sync or an async iterable of ids".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .._wire.ids import Ids, each

if TYPE_CHECKING:
    from ..client import BitrixClient

__all__ = [
    "CatalogIds",
    "Ids",
    "catalog_ids",
    "count_ids",
    "counted",
    "each",
    "file_ids",
    "sharded",
    "unique",
]


async def unique(ids: Ids) -> AsyncIterator[int]:
    """The ids once each: a product listed twice in a row would look like one product."""
    seen: set[int] = set()
    async for product_id in each(ids):
        if product_id not in seen:
            seen.add(product_id)
            yield product_id


async def sharded(ids: Ids, index: int, count: int) -> AsyncIterator[int]:
    """The ids with ``id % count == index``, so that *count* hosts split one catalog."""
    async for product_id in each(ids):
        if product_id % count == index:
            yield product_id


async def counted(ids: Ids, seen: Callable[[int | None], object]) -> AsyncIterator[int]:
    """
    The ids, calling *seen* before each one with the number of ids when the source has
    learnt it by then (``CatalogIds.total``; ``None`` otherwise): a progress bar's feed.
    """
    async for product_id in each(ids):
        seen(ids.total if isinstance(ids, CatalogIds) else None)
        yield product_id


def file_ids(lines: Iterable[str], source: str) -> Iterator[int]:
    """
    Product ids from the lines of a file, one per line, read lazily.

    Blank lines and ``#`` comments are skipped; anything else that is not a positive
    integer is a ``ValueError`` naming the line.
    """
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isdigit() or int(text) <= 0:
            raise ValueError(f"{source}, line {number}: not a product id: {text[:40]!r}")
        yield int(text)


def count_ids(path: Path) -> int | None:
    """
    The product ids in a products file, counted in one quick pass (the bar's total).

    Lines are counted as ``file_ids`` reads them: blank lines and ``#`` comments are not
    ids. ``None`` for what cannot be read twice (standard input, a pipe) or at all; a line
    that is not an id is reported by ``file_ids`` when its turn comes.
    """
    try:
        if not path.is_file():
            return None
        with path.open("rb") as lines:
            return sum(1 for line in lines if line.split(b"#", 1)[0].strip())
    except OSError:
        return None


class CatalogIds:
    """
    Every product id of a catalog, ascending, one page of ``catalog.product.list`` at a time.

    An async iterator of ids; ``total`` is the catalog's size once the first page has told
    it (list-methods-pecularities.md: ``total`` in every answer), for a progress bar.
    """

    def __init__(self, client: BitrixClient, iblock_id: int) -> None:
        self.total: int | None = None
        self._client = client
        self._iblock_id = iblock_id
        self._ids: AsyncIterator[int] | None = None

    def __aiter__(self) -> CatalogIds:
        return self

    async def __anext__(self) -> int:
        if self._ids is None:
            self._ids = self._walk()
        return await self._ids.__anext__()

    async def _walk(self) -> AsyncIterator[int]:
        params = {
            "filter": {"iblockId": self._iblock_id},
            "select": ["id", "iblockId"],
            "order": {"id": "ASC"},
        }
        pages = self._client.paginate("catalog.product.list", params, key="products").pages()
        async for page in pages:
            if self.total is None:
                self.total = page.total
            for product in page.items:
                value = product.get("id") if isinstance(product, dict) else None
                # catalog.product.list sends ids as numbers or numeric strings.
                if isinstance(value, int) and not isinstance(value, bool):
                    yield value
                elif isinstance(value, str) and value.isdigit():
                    yield int(value)
                else:
                    raise ValueError(
                        f"catalog.product.list sent a product without a valid id: {value!r}"
                    )


def catalog_ids(client: BitrixClient, iblock_id: int) -> CatalogIds:
    """Every product id of a catalog (``CatalogIds``: its ``total`` once known)."""
    return CatalogIds(client, iblock_id)
