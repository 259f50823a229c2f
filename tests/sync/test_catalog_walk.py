"""``bx.catalog_ids``: a catalog walked by id, up to 50 pages chained in one ``batch``.

Against the embedded portal, which resolves ``$result[...]`` references as the server does
(a reference past a short page stops at the deepest value there) and counts the rows its
``catalog.product.list`` reads. Request counts and rows are behaviour, asserted exactly.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import webhook_client

import bitrix_images as bx
from bitrix_images.testing import FakePortal, PortalCatalog

PRODUCTS = "catalog.product.list"
NO_TOTAL = {"result": {"products": []}, "time": {"start": 0, "finish": 0, "duration": 0}}


async def _walk(portal: FakePortal, iblock_id: int = 14) -> tuple[list[int], int | None]:
    async with webhook_client(portal) as client:
        ids = bx.catalog_ids(client, iblock_id)
        seen = [product_id async for product_id in ids]
        return seen, ids.total


def _walk_requests(products: int) -> int:
    # One batch per 2,500 ids, and the batch that finds the end (a short or empty page).
    return products // 2500 + 1


@pytest.mark.parametrize("products", [0, 1, 50, 2499, 2500, 2501, 5000])
async def test_catalog_ends(products: int) -> None:
    async with FakePortal(products=products, rate=None) as portal:
        ids, total = await _walk(portal)
        assert ids == list(range(1, products + 1))
        assert total == products
        counters = portal.counters
        # One counted request for the total, then the walk: <= ceil(P / 2500) + 2 in all.
        assert counters.requests == 1 + _walk_requests(products)
        assert counters.by_method["batch"] == _walk_requests(products)
        # The count reads its page and counts the catalog; the walk reads each row once.
        assert counters.rows_read == min(50, products) + products + products
        assert counters.rows_read <= 2.1 * products + 50
        # Each request asked only the pages still to come, plus the one that ends the walk.
        assert counters.commands[PRODUCTS] == products // 50 + 1


async def test_ids_with_gaps() -> None:
    kept = list(range(3, 9001, 3))  # 3,000 ids, two of every three missing
    catalogs = (PortalCatalog(14, products=kept), PortalCatalog(20, "Others"))
    async with FakePortal(products=9000, catalogs=catalogs, rate=None) as portal:
        ids, total = await _walk(portal)
        assert (ids, total) == (kept, 3000)
        assert portal.counters.requests == 1 + 2
        assert portal.counters.rows_read == 50 + 3000 + 3000
        portal.counters.reset()
        ids, total = await _walk(portal, 20)
        assert (ids, total) == ([i for i in range(1, 9001) if i % 3], 6000)
        assert portal.counters.requests == 1 + 3


@pytest.mark.parametrize(
    ("products", "added", "batches"), [(2600, 1, 2), (2550, 50, 3), (5000, 120, 4)]
)
async def test_products_added_during_the_walk(products: int, added: int, batches: int) -> None:
    # The total counted first is only the bar's figure: products added meanwhile (with
    # higher ids) are walked too, even when they fill every page asked for.
    async with FakePortal(products=products, rate=None) as portal, webhook_client(portal) as client:
        ids = bx.catalog_ids(client, 14)
        seen = [await ids.__anext__()]
        for _ in range(added):
            portal.catalog.add_product()
        seen += [product_id async for product_id in ids]
        assert seen == list(range(1, products + added + 1))
        assert ids.total == products
        # A batch asked for the pages the total left; all came back full: the walk went on.
        assert portal.counters.by_method["batch"] == batches


@pytest.mark.parametrize("products", [0, 50, 60, 2500, 2560])
async def test_unknown_total_walks_fifty_pages_and_discards_past_the_end(products: int) -> None:
    # Without a total every batch chains 50 pages. After the first short or empty page the
    # later references are broken: the portal runs them from the page's list (every
    # element's intval is 1: ">1") or with no bound at all, and they bring ids again;
    # all of it is discarded.
    async with FakePortal(products=products, rate=None) as portal:
        portal.inject("error", method=PRODUCTS, status=200, body=NO_TOTAL)
        ids, total = await _walk(portal)
        assert (ids, total) == (list(range(1, products + 1)), None)
        assert portal.counters.by_method["batch"] == _walk_requests(products)
        assert portal.counters.commands[PRODUCTS] == 50 * _walk_requests(products)


@pytest.mark.parametrize("failed", [1, 2])
async def test_a_failed_command_breaks_the_chain_after_it(failed: int) -> None:
    # The first page (or the first two) fails once and is resent: the first page's answer
    # stands (its bound is a number), but the pages after it ran against a missing result,
    # or were resent, and are discarded; the walk goes on from the last id kept.
    async with FakePortal(products=3000, rate=None) as portal:
        portal.inject(
            "command_error", method=PRODUCTS, times=failed, body=_error("INTERNAL_SERVER_ERROR")
        )
        ids, _ = await _walk(portal)
        assert ids == list(range(1, 3001))
        # The count, the broken batch, its resent first page, then 2,950 ids in two.
        assert portal.counters.by_method["batch"] == 4


async def test_a_command_that_keeps_failing_is_raised() -> None:
    async with FakePortal(products=100, rate=None) as portal:
        portal.inject(
            "command_error", method=PRODUCTS, times=100, body=_error("ACCESS_DENIED", "no")
        )
        with pytest.raises(bx.BitrixError, match="no"):
            await _walk(portal)


@pytest.mark.parametrize("iblock_id", [0, -1, True, "14", 1.5, None])
async def test_iblock_is_checked_before_any_request(iblock_id: Any) -> None:
    async with FakePortal(rate=None) as portal, webhook_client(portal) as client:
        with pytest.raises((TypeError, ValueError), match="iblock_id"):
            bx.catalog_ids(client, iblock_id)
        assert portal.counters.requests == 0


async def test_an_unknown_iblock_walks_nothing() -> None:
    async with FakePortal(products=10, rate=None) as portal:
        assert await _walk(portal, 99) == ([], 0)
        assert portal.counters.requests == 2


def _error(code: str, description: str = "") -> dict[str, Any]:
    return {"error": code, "error_description": description}


def _batch_answer(products: list[object]) -> dict[str, Any]:
    return {
        "result": {
            "result": {"p0": {"products": products}},
            "result_error": [],
            "result_total": [],
            "result_next": [],
            "result_time": [],
        },
        "time": NO_TOTAL["time"],
    }


async def test_ids_as_numbers_or_numeric_strings() -> None:
    async with FakePortal(products=3, rate=None) as portal:
        portal.inject(
            "error",
            method="batch",
            status=200,
            body=_batch_answer([{"id": 1}, {"id": "2"}, {"id": 3, "iblockId": 14}]),
        )
        assert await _walk(portal) == ([1, 2, 3], 3)
        assert portal.counters.by_method["batch"] == 1


@pytest.mark.parametrize(
    ("products", "message"),
    [
        ([{"id": None}], "without a valid id"),
        ([{"id": True}], "without a valid id"),
        ([{"id": "x"}], "without a valid id"),
        ([["id", 1]], "without a valid id"),
        ([{"id": 2}, {"id": 2}], "id 2 after id 2"),
        ([{"id": i} for i in range(1, 52)], "51 products in one page"),
        (5, "no list"),
    ],
)
async def test_a_page_that_would_break_the_walk_is_refused(products: Any, message: str) -> None:
    async with FakePortal(products=3, rate=None) as portal:
        portal.inject("error", method="batch", status=200, body=_batch_answer(products))
        with pytest.raises(bx.MalformedResponse, match=message):
            await _walk(portal)
