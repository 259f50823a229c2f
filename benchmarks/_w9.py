"""
W9: the ids of a whole catalog, walked by offset (main before issue 20) and by id.

    python -m benchmarks --only W9 [--quick]      (the section "W9" of RESULTS.md)

One embedded portal in this process (no bucket: the figures are counts, not time), one
client per walk. For each walk: the REST requests it sent, the rows the portal's
``catalog.product.list`` read (``portal.counters.rows_read``: an offset page reads every
skipped row, its own, and counts the catalog; a ``start=-1`` page reads its own), and what
those requests would cost at the real default bucket (2/s, burst 50):
``max(0, requests - 50) / 2`` seconds. Both walks must bring every id once, in order.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from . import write_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

SCALES = {"full": {"products": 20_000}, "quick": {"products": 5_000}}
IBLOCK = 14


async def _offset_walk(client: Any) -> AsyncIterator[int]:
    # What main's CatalogIds did: catalog.product.list paged by the portal's own `next`.
    params = {
        "filter": {"iblockId": IBLOCK},
        "select": ["id", "iblockId"],
        "order": {"id": "ASC"},
    }
    async for product in client.paginate("catalog.product.list", params, key="products"):
        yield int(product["id"])


async def _id_walk(client: Any) -> AsyncIterator[int]:
    import bitrix_images as bx

    async for product_id in bx.catalog_ids(client, IBLOCK):
        yield product_id


async def _measure(products: int) -> dict[str, Any]:
    import bitrix_images as bx
    from bitrix_images.testing import FakePortal

    rows: dict[str, Any] = {}
    walks: dict[str, Callable[[Any], AsyncIterator[int]]] = {
        "offset walk (main)": _offset_walk,
        "id walk, 50 pages per batch": _id_walk,
    }
    async with FakePortal(products=products, images_per_product=0, rate=None) as portal:
        for label, walk in walks.items():
            portal.counters.reset()
            unlimited = bx.RateLimit(rate=1e6, burst=1_000_000)
            async with bx.BitrixClient.from_webhook(portal.webhook_url, rate_limit=unlimited) as c:
                started = time.perf_counter()
                ids = [product_id async for product_id in walk(c)]
                seconds = time.perf_counter() - started
            if ids != list(range(1, products + 1)):
                raise RuntimeError(f"W9 {label}: {len(ids)} ids, not 1..{products}")
            requests = portal.counters.requests
            rows[label] = {
                "requests": requests,
                "rows_read": portal.counters.rows_read,
                "seconds": seconds,
                "real_rate_s": max(0, requests - 50) / 2.0,
            }
    return rows


def measure(products: int, log: Callable[[str], None]) -> dict[str, Any]:
    log(f"W9: the ids of {products} products, offset walk and id walk")
    rows = asyncio.run(_measure(products))
    walk = rows["id walk, 50 pages per batch"]
    request_bound = math.ceil(products / 2500) + 2
    rows_bound = 2.1 * products
    return {
        "products": products,
        "rows": rows,
        "request_bound": request_bound,
        "rows_bound": rows_bound,
        "met": walk["requests"] <= request_bound and walk["rows_read"] <= rows_bound,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def render(report: dict[str, Any]) -> str:
    products = report["products"]
    lines = [
        f"### W9: the ids of a catalog of {products} products",
        "",
        "| walk | REST requests | rows read | rows / product | at the real 2/s, burst 50 "
        "| wall s (loopback, no bucket) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, row in report["rows"].items():
        lines.append(
            f"| {label} | {row['requests']} | {row['rows_read']:,} | "
            f"{row['rows_read'] / products:.2f} | {row['real_rate_s']:.0f} s | "
            f"{row['seconds']:.2f} |"
        )
    walk = report["rows"]["id walk, 50 pages per batch"]
    verdict = "met" if report["met"] else "MISSED"
    lines += [
        "",
        f"Targets: <= ceil(P / 2,500) + 2 = {report['request_bound']} requests "
        f"(measured {walk['requests']}) and <= 2.1 x P = {report['rows_bound']:,.0f} rows "
        f"(measured {walk['rows_read']:,}): {verdict} ({report['generated']}).",
        "",
    ]
    return "\n".join(lines)


def write(table: str) -> None:
    write_section(RESULTS, "W9", "W9", table)


def main(*, quick: bool, write_results: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Run W9, print its table, and (unless told not to) write it into RESULTS.md."""
    report = measure(SCALES["quick" if quick else "full"]["products"], log)
    table = render(report)
    print(table)
    if write_results:
        write(table)
        log(f"wrote W9 into {RESULTS}")
    if not report["met"]:
        raise SystemExit("W9: a target was missed")
    return report
