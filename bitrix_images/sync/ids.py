"""
Where product ids come from: a list, a products file, a whole catalog; shards and counts.

Every source is read lazily, one id at a time, so that a catalog of millions costs no
memory; ``each`` is the one place that takes "a sync or an async iterable of ids".
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .._calls.batch import run_batch
from .._wire.ids import Ids, each
from .._wire.protocol import BATCH_MAX_COMMANDS, Command, items_of
from .._wire.validate import check_int
from ..exceptions import MalformedResponse

if TYPE_CHECKING:
    from .._calls.caller import Caller
    from ..client import BitrixClient

__all__ = [
    "CatalogIds",
    "Ids",
    "catalog_ids",
    "count_ids",
    "count_products",
    "counted",
    "each",
    "file_ids",
    "sharded",
    "unique",
]

PRODUCTS: Final = "catalog.product.list"
PRODUCTS_KEY: Final = "products"
#: catalog.product.list's page: 50 products (list-methods-pecularities.md).
PAGE: Final = 50


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
    Every product id of a catalog, ascending, walked by id (DOCS huge-data.md).

    An async iterator of ids. Pages of ``catalog.product.list`` are asked by ``>id`` with
    ``start=-1`` (the portal neither skips nor counts rows), up to 50 of them chained in one
    ``batch``: each command's filter is the previous command's last id, a
    ``$result[pN][products][49][id]`` reference the portal fills in, so one request brings up
    to 2,500 ids. ``total`` is the catalog's size from one counted request made first (one
    ``COUNT`` of the catalog), or ``None`` if that request did not tell it; it is only a
    progress bar's figure: the walk goes on past it for products added meanwhile.
    At most one batch of ids is held at a time.
    """

    def __init__(self, client: BitrixClient, iblock_id: int) -> None:
        self.iblock_id = check_int("iblock_id", iblock_id, minimum=1)
        self.total: int | None = None
        self._counted = False
        self._client = client
        self._ids: AsyncIterator[int] | None = None

    def __aiter__(self) -> CatalogIds:
        return self

    async def __anext__(self) -> int:
        if self._ids is None:
            self._ids = self._walk()
        return await self._ids.__anext__()

    async def count(self) -> int | None:
        """
        The catalog's size (``total``), counted once with one request; ``None`` when the
        portal's answer did not tell it. The walk counts first unless this was called.
        """
        if not self._counted:
            self.total = await count_products(self._client, self.iblock_id)
            self._counted = True
        return self.total

    async def _walk(self) -> AsyncIterator[int]:
        caller = _caller(self._client)
        await self.count()
        last, seen = 0, 0
        while True:
            pages = _pages_wanted(self.total, seen)
            ids, ended = await _chain(caller, self.iblock_id, last, pages)
            for product_id in ids:
                yield product_id
            seen += len(ids)
            if ended:
                return
            last = ids[-1]


def catalog_ids(client: BitrixClient, iblock_id: int) -> CatalogIds:
    """Every product id of a catalog, walked by id (``CatalogIds``: its ``total`` once known)."""
    return CatalogIds(client, iblock_id)


def _caller(client: BitrixClient) -> Caller:
    # batch requests are internal (the client's Caller), as for the upload's sends.
    return client._caller


def _page_params(iblock_id: int, after: int | str) -> dict[str, object]:
    return {
        "filter": {"iblockId": iblock_id, ">id": after},
        "order": {"id": "ASC"},
        "select": ["id", "iblockId"],
        "start": -1,
    }


async def count_products(client: BitrixClient, iblock_id: int) -> int | None:
    """
    The number of products in a catalog, from one counted request (an offset-form page of
    ``catalog.product.list``: its ``total``, one ``COUNT`` of the catalog); ``None`` when
    the answer carries no total.
    """
    iblock_id = check_int("iblock_id", iblock_id, minimum=1)
    # catalog-product-list.md: select must hold both id and iblockId, or the call fails.
    params = {"filter": {"iblockId": iblock_id}, "select": ["id", "iblockId"], "start": 0}
    envelope = await _caller(client).call(PRODUCTS, params)
    return envelope.total


def _pages_wanted(total: int | None, seen: int) -> int:
    """
    The pages to chain in the next batch: 50, or, when the total is known, just enough for
    the ids still to come plus one page that comes back short (or empty) to end the walk.

    Every command past the end still runs on the portal with a broken reference and reads
    up to a page of rows for nothing; with the total known there are none of them.
    """
    if total is None or seen > total:
        return BATCH_MAX_COMMANDS  # unknown, or products were added since it was counted
    return min(BATCH_MAX_COMMANDS, (total - seen) // PAGE + 1)


async def _chain(caller: Caller, iblock_id: int, last: int, pages: int) -> tuple[list[int], bool]:
    """
    One ``batch`` of *pages* chained pages after id *last*: the ids it brought, and whether
    the catalog ended in it (a short or empty page).

    Only pages that follow an unbroken chain count. After the first short page the later
    commands' references point past its end: the portal stops at the deepest value that
    exists (CRestUtil::processBatchElement: the page's list, or the whole result map) and
    runs them with that, so whatever they return is discarded. A command that failed and
    was resent alone by ``run_batch`` lost its reference too: its ids (past the first page,
    which names *last* itself) and the later ones' are discarded, as are the pages that ran
    after a failed one; the next batch starts from the last id kept. A command that failed
    for good is raised.
    """
    keys = [f"p{index}" for index in range(pages)]
    commands: dict[str, Command] = {keys[0]: (PRODUCTS, _page_params(iblock_id, last))}
    for before, key in itertools.pairwise(keys):
        reference = f"$result[{before}][{PRODUCTS_KEY}][{PAGE - 1}][id]"
        commands[key] = (PRODUCTS, _page_params(iblock_id, reference))
    outcomes = await run_batch(caller, commands)
    ids: list[int] = []
    for index, key in enumerate(keys):
        if index > 0 and (outcomes[key].sends > 1 or outcomes[keys[index - 1]].sends > 1):
            # It, or the page it refers to, failed in the first request: it ran without its
            # chain, whatever its outcome. Go on from the last id kept: the next batch asks
            # for this page by a literal id, and raises if it fails for good there.
            return ids, False
        outcome = outcomes[key]
        if outcome.error is not None:
            raise outcome.error
        page = _page_ids(outcome.result, ids[-1] if ids else last)
        ids += page
        if len(page) < PAGE:
            return ids, True
    return ids, False


def _page_ids(result: object, after: int) -> list[int]:
    """The ids of one page, each above *after* and ascending (else the walk would loop)."""
    ids: list[int] = []
    for product in items_of(result, PRODUCTS_KEY, method=PRODUCTS):
        value = product.get("id") if isinstance(product, dict) else None
        # catalog.product.list sends ids as numbers or numeric strings.
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise MalformedResponse(
                f"catalog.product.list sent a product without a valid id: {value!r}",
                method=PRODUCTS,
            )
        if value <= after:
            raise MalformedResponse(
                f"catalog.product.list sent id {value} after id {after} in an ascending walk",
                method=PRODUCTS,
            )
        ids.append(value)
        after = value
    if len(ids) > PAGE:
        raise MalformedResponse(
            f"catalog.product.list sent {len(ids)} products in one page", method=PRODUCTS
        )
    return ids
