"""The mirror job over a catalog that changes under it: a product deleted, or closed to
us, between enumeration and listing is skipped and reported, and the run goes on."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import FAST_RETRY, UNLIMITED

import bitrix_images as bx
from bitrix_images.testing import INTERNAL_SERVER_ERROR, FakePortal


def expected_files(portal: FakePortal, product_ids: list[int]) -> dict[str, bytes]:
    return {
        f"{pid}/{image.name}": image.content
        for pid in product_ids
        for image in portal.catalog.images(pid)
    }


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".bitrix-images.sqlite")
    }


@pytest.mark.parametrize("page_mode", ["source", "offset"])
async def test_a_missing_and_a_forbidden_product_are_skipped(
    tmp_path: Path, page_mode: str
) -> None:
    async with FakePortal(
        products=300, images_per_product=2, rate=None, page_mode=page_mode
    ) as portal:  # type: ignore[arg-type]
        portal.catalog.deny_read(200)
        empty = portal.catalog.add_product()  # no images: yields nothing, still finished
        ids = [*range(1, 151), 99_999, empty, *range(151, 301)]
        warnings = io.StringIO()
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
        ) as client:
            stats = await bx.mirror(client, ids, tmp_path, warnings=warnings)
        listed = [pid for pid in ids if pid not in (99_999, 200)]
        assert files_under(tmp_path) == expected_files(portal, listed)
        assert stats.unlisted == 2
        assert stats.products == len(ids)
        assert stats.downloaded == stats.images == 2 * 299
        assert "product 99999 skipped" in warnings.getvalue()
        assert "product 200 skipped" in warnings.getvalue()
        assert "2 products could not be listed" in stats.summary()
        # Each product was listed once, except those in flight when a skip restarted it.
        assert portal.counters.commands["catalog.productimage.list"] < len(ids) + 2 * 200


async def test_skipping_works_for_an_async_source_and_a_failure_first(tmp_path: Path) -> None:
    async with FakePortal(products=60, images_per_product=1, rate=None) as portal:

        async def ids() -> AsyncIterator[int]:
            yield 12_345  # the very first product is gone
            for pid in range(1, 61):
                yield pid

        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
        ) as client:
            stats = await bx.mirror(client, ids(), tmp_path, warnings=io.StringIO())
        assert files_under(tmp_path) == expected_files(portal, list(range(1, 61)))
        assert stats.unlisted == 1


async def test_a_failure_every_product_would_share_still_stops_the_run(tmp_path: Path) -> None:
    async with FakePortal(products=5, images_per_product=1, rate=None) as portal:
        portal.inject(
            "command_error",
            times=1000,
            method="catalog.productImage.list",
            body=INTERNAL_SERVER_ERROR,
        )
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
        ) as client:
            with pytest.raises(bx.BatchError) as info:
                await bx.mirror(client, [1, 2, 3], tmp_path, warnings=io.StringIO())
        assert isinstance(next(iter(info.value.errors.values())), bx.ServerError)
