"""``_listing.products``: each product once, complete or with its error, never half."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import bitrix_images as bx
from bitrix_images.sync.listing import Listed, products


class Stub:
    """A client whose list_products gives each product asked for its images or its error."""

    def __init__(
        self,
        images: list[bx.ProductImage],
        failures: dict[int, bx.BitrixError] | None = None,
    ) -> None:
        self.images = self
        self._images = images
        self._failures = failures or {}
        self.asked: list[int] = []

    async def list_products(
        self, ids: AsyncIterator[int], *, select: object = None
    ) -> AsyncIterator[bx.ProductListing]:
        async for product_id in ids:
            self.asked.append(product_id)
            error = self._failures.get(product_id)
            if error is not None:
                yield bx.ProductListing(product_id, error=error)
                continue
            found = tuple(i for i in self._images if i.product_id == product_id)
            yield bx.ProductListing(product_id, found)


def image(image_id: int, product_id: int | None) -> bx.ProductImage:
    return bx.ProductImage(id=image_id, name=f"{image_id}.png", product_id=product_id)


async def collect(client: Any, ids: list[int]) -> list[Listed]:
    return [listed async for listed in products(client, ids)]


async def test_empty_products_and_repeated_ids() -> None:
    client = Stub([image(10, 2), image(11, 2)])
    listed = await collect(client, [1, 2, 2, 3, 1])
    assert client.asked == [1, 2, 3]
    assert [(entry.product_id, len(entry.images)) for entry in listed] == [(1, 0), (2, 2), (3, 0)]


async def test_a_failure_every_product_would_share_is_raised_and_nothing_after_it() -> None:
    down = bx.ServerError("the portal is down", status=500)
    client = Stub([image(10, 1), image(11, 3)], failures={2: down})
    seen: list[Listed] = []

    async def consume() -> None:
        async for listed in products(client, [1, 2, 3]):
            seen.append(listed)

    with pytest.raises(bx.BatchError, match="product 2") as info:
        await consume()
    assert info.value.product_id == 2
    assert list(info.value.errors.values()) == [down]
    assert [entry.product_id for entry in seen] == [1]  # whole; nothing after the failure


async def test_a_missing_product_is_reported_and_the_rest_listed() -> None:
    gone = bx.NotFound("Product was not found")
    client = Stub([image(10, 1)], failures={2: gone})
    listed = await collect(client, [1, 2, 3])
    assert [(entry.product_id, len(entry.images), entry.error) for entry in listed] == [
        (1, 1, None),
        (2, 0, gone),
        (3, 0, None),
    ]
    assert client.asked == [1, 2, 3]  # no product listed twice: no restart
