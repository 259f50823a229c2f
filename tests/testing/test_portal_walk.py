"""The embedded portal's catalogs: ``catalog.product.list`` paged by ``>id`` with ``start=-1``
(DOCS settings/performance/huge-data.md), the rows it reads, ``batch`` pages chained through
``$result[...]`` references (CRestUtil::processBatchElement), and ``catalog.catalog.list``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from support import call

from bitrix_images.testing import FakePortal, PortalCatalog
from bitrix_images.testing._batch import resolve, resolve_value
from bitrix_images.testing._phpquery import php_intval

PRODUCTS = "catalog.product.list"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _page(after: int | str, iblock: int = 14) -> dict[str, Any]:
    return {
        "filter": {"iblockId": iblock, ">id": after},
        "order": {"id": "ASC"},
        "select": ["id", "iblockId"],
        "start": -1,
    }


def _query(after: int | str) -> str:
    # One batch command: the page after *after*, as a PHP query string.
    return (
        f"{PRODUCTS}?filter[iblockId]=14&filter[>id]={after}&order[id]=ASC"
        "&select[]=id&select[]=iblockId&start=-1"
    )


async def test_id_pages_read_only_their_rows(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=120, rate=None) as portal:
        url = portal.webhook_url / PRODUCTS
        seen: list[int] = []
        last = 0
        while True:
            status, body = await call(session, url, _page(last))
            assert status == 200
            assert "total" not in body
            assert "next" not in body
            products = body["result"]["products"]
            assert all(set(p) == {"id", "iblockId"} for p in products)
            seen += [p["id"] for p in products]
            if len(products) < 50:
                break
            last = products[-1]["id"]
        assert seen == list(range(1, 121))
        assert portal.counters.rows_read == 120
        assert portal.counters.by_method[PRODUCTS] == 3


async def test_offset_pages_read_skipped_rows_and_count(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=120, rate=None) as portal:
        url = portal.webhook_url / PRODUCTS
        base = {"filter": {"iblockId": 14}, "select": ["id"]}
        status, body = await call(session, url, {**base, "start": 0})
        assert (status, body["total"], body["next"]) == (200, 120, 50)
        assert portal.counters.rows_read == 50 + 120
        _, body = await call(session, url, {**base, "start": 100})
        assert "next" not in body
        assert [p["id"] for p in body["result"]["products"]] == list(range(101, 121))
        assert portal.counters.rows_read == 170 + 120 + 120
        # Descending order and the id filter together.
        _, body = await call(
            session, url, {**base, "order": {"ID": "DESC"}, "filter": {"iblockId": 14, "<=id": 3}}
        )
        assert [p["id"] for p in body["result"]["products"]] == [3, 2, 1]
        assert body["total"] == 3


async def test_batch_chains_pages_through_result_references(
    session: aiohttp.ClientSession,
) -> None:
    async with FakePortal(products=260, rate=None) as portal:
        cmd = {"p0": _query(0)}
        for index in range(1, 6):
            cmd[f"p{index}"] = _query(f"$result[p{index - 1}][products][49][id]")
        status, body = await call(session, portal.webhook_url / "batch", {"cmd": cmd, "halt": 1})
        assert status == 200
        result = body["result"]["result"]
        pages = [[p["id"] for p in result[f"p{i}"]["products"]] for i in range(6)]
        assert pages[:5] == [list(range(1 + 50 * i, 51 + 50 * i)) for i in range(5)]
        assert pages[5] == list(range(251, 261))
        assert body["result"]["result_error"] == []
        assert body["result"]["result_total"] == []  # start=-1 counts nothing
        assert portal.counters.rows_read == 260
        assert portal.counters.requests == 1


async def test_reference_past_a_short_page(session: aiohttp.ClientSession) -> None:
    # A reference past the end of a short page stops at the deepest value there: the
    # page's list of products; as a `>id` bound, every element's intval (1) is ORed, so
    # the next command reads from id 2 again. Exactly 50 products leave the next page
    # empty, and a reference into an empty page gives the empty list: no bound at all.
    async with FakePortal(products=60, rate=None) as portal:
        cmd = {
            "a": _query(0),
            "b": _query("$result[a][products][49][id]"),
            "c": _query("$result[b][products][49][id]"),
        }
        _, body = await call(session, portal.webhook_url / "batch", {"cmd": cmd})
        result = body["result"]["result"]
        assert [p["id"] for p in result["b"]["products"]] == list(range(51, 61))
        assert [p["id"] for p in result["c"]["products"]] == list(range(2, 52))
    async with FakePortal(products=50, rate=None) as portal:
        cmd = {
            "a": _query(0),
            "b": _query("$result[a][products][49][id]"),
            "c": _query("$result[b][products][49][id]"),
        }
        _, body = await call(session, portal.webhook_url / "batch", {"cmd": cmd})
        result = body["result"]["result"]
        assert result["b"]["products"] == []
        assert [p["id"] for p in result["c"]["products"]] == list(range(1, 51))


async def test_batch_commands_as_a_list(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=3, rate=None) as portal:
        cmd = [_query(0), _query("$result[0][products][0][id]"), 42]
        status, body = await call(session, portal.webhook_url / "batch", {"cmd": cmd})
        assert status == 200
        pages = body["result"]["result"]
        assert isinstance(pages, list)  # keys 0..n-1: json_encode writes a list
        assert [p["id"] for p in pages[1]["products"]] == [2, 3]
        _, body = await call(session, portal.webhook_url / "batch", {"cmd": "nothing"})
        assert body["result"]["result"] == []


def test_resolve_value_follows_process_batch_element() -> None:
    store: dict[str, object] = {
        "result": {"u": {"ID": 7, "NAME": "Ann", "DEPS": [3, 5], "ok": True}, "l": []},
        "next": {"u": 50},
        "total": {},
        "time": {},
        "error": {},
    }
    # The whole value is the reference: the value itself, of any type.
    assert resolve_value("$result[u][ID]", store) == 7
    assert resolve_value("$result[u][DEPS]", store) == [3, 5]
    assert resolve_value("$next[u]", store) == 50
    assert resolve_value("$RESULT[u][ID]", store) is None  # the map is looked up as written
    # Inside a longer text: only strings and numbers are spliced.
    assert resolve_value("id=$result[u][DEPS][1] x", store) == "id=5 x"
    # The reference runs to the next whitespace, so a trailing "!" goes with it.
    assert resolve_value("Hi $result[u][NAME]! ", store) == "Hi Ann "
    assert resolve_value("x $result[u][ok]", store) == "x $result[u][ok]"
    assert resolve_value("x $result[u][DEPS]", store) == "x $result[u][DEPS]"
    # A missing key stops the walk where it is.
    assert resolve_value("$result[u][DEPS][9]", store) == [3, 5]
    assert resolve_value("$result[l][49][id]", store) == []
    assert resolve_value("$result[gone][0]", store) == store["result"]
    # No path, or no known map: left as written.
    assert resolve_value("$result", store) == "$result"
    assert resolve_value("$other[u]", store) == "$other[u]"
    assert resolve({"f": {">id": "$result[u][ID]"}, "n": 1}, store) == {"f": {">id": 7}, "n": 1}
    # Numbers as PHP writes them; a key into a PHP array with integer keys.
    numbers: dict[str, object] = {"result": {"f": {"a": 2.0, "b": 2.5, "c": False}}}
    numbers["result"]["g"] = {1: "one"}  # type: ignore[index]
    assert resolve_value("x=$result[f][a] ", numbers) == "x=2 "
    assert resolve_value("x=$result[f][b] ", numbers) == "x=2.5 "
    assert resolve_value("x=$result[f][c] ", numbers) == "x=$result[f][c] "
    assert resolve_value("x=$result[g][1] ", numbers) == "x=one "
    # What such a bound then means to the filter: PHP's intval of an array.
    assert (php_intval([{"id": 9}]), php_intval({"a": 1}), php_intval([])) == (1, 1, 0)


async def test_catalog_list_and_variations(session: aiohttp.ClientSession) -> None:
    catalogs = (
        PortalCatalog(14, "Products"),
        PortalCatalog(
            15,
            "Products (offers)",
            products=[9, 8, 10],
            parent_iblock_id=14,
            sku_property_id=97,
        ),
    )
    async with FakePortal(products=10, catalogs=catalogs, rate=None) as portal:
        assert portal.catalogs == catalogs
        status, body = await call(session, portal.webhook_url / "catalog.catalog.list", {})
        assert status == 200
        assert body["total"] == 2
        parent, offers = body["result"]["catalogs"]
        assert parent == {
            "iblockId": 14,
            "iblockTypeId": "CRM_PRODUCT_CATALOG",
            "id": 14,
            "lid": "s1",
            "name": "Products",
            "productIblockId": None,
            "skuPropertyId": None,
            "subscription": "N",
            "vatId": None,
        }
        assert (offers["id"], offers["productIblockId"], offers["skuPropertyId"]) == (15, 14, 97)
        url = portal.webhook_url / PRODUCTS
        _, body = await call(session, url, _page(0, 15))
        assert body["result"]["products"] == [{"id": i, "iblockId": 15} for i in (8, 9, 10)]
        _, body = await call(session, url, _page(0, 14))
        assert [p["id"] for p in body["result"]["products"]] == list(range(1, 8))
        _, body = await call(session, url, _page(0, 99))
        assert body["result"]["products"] == []
        _, body = await call(session, portal.webhook_url / "catalog.catalog.list", {"start": -1})
        assert "total" not in body


async def test_default_catalog_is_the_iblock(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=3, iblock_id=21) as portal:
        _, body = await call(session, portal.webhook_url / "catalog.catalog.list", {})
        assert [c["iblockId"] for c in body["result"]["catalogs"]] == [21]
        _, body = await call(session, portal.webhook_url / PRODUCTS, _page(0, 21))
        assert [p["id"] for p in body["result"]["products"]] == [1, 2, 3]


def test_catalogs_need_distinct_iblocks() -> None:
    with pytest.raises(ValueError, match="distinct"):
        FakePortal(catalogs=(PortalCatalog(14), PortalCatalog(14)))
    with pytest.raises(ValueError, match="distinct"):
        FakePortal(catalogs=())
