"""``_listing.products``: each product once, complete or with its error, never half."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import bitrix_images as bx
from bitrix_images.sync.listing import Listed, products


class Stub:
    """A client whose first list_many yields *images* after reading every id, then may fail."""

    def __init__(self, images: list[bx.ProductImage], failure: Exception | None = None) -> None:
        self.images = self
        self._images = images
        self._failure = failure
        self.asked: list[int] = []

    async def list_many(self, ids: AsyncIterator[int]) -> AsyncIterator[bx.ProductImage]:
        self.asked += [i async for i in ids]
        images, self._images = self._images, []  # a first listing only
        for image in images:
            yield image
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure


def image(image_id: int, product_id: int | None) -> bx.ProductImage:
    return bx.ProductImage(id=image_id, name=f"{image_id}.png", product_id=product_id)


async def collect(client: Any, ids: list[int]) -> list[Listed]:
    return [listed async for listed in products(client, ids)]


async def test_empty_products_and_repeated_ids() -> None:
    client = Stub([image(10, 2), image(11, 2)])
    listed = await collect(client, [1, 2, 2, 3, 1])
    assert client.asked == [1, 2, 3]
    assert [(entry.product_id, len(entry.images)) for entry in listed] == [(1, 0), (2, 2), (3, 0)]


async def test_images_of_a_product_not_asked_for_are_refused() -> None:
    with pytest.raises(bx.MalformedResponse, match="product 9, not asked for"):
        await collect(Stub([image(10, 9)]), [1, 2])
    with pytest.raises(bx.MalformedResponse, match="without its productId"):
        await collect(Stub([image(10, None)]), [1])


async def test_a_failure_of_a_product_not_in_flight_yields_nothing_more() -> None:
    gone = bx.BatchError("gone", errors={"p0": bx.NotFound("Product was not found")}, product_id=77)
    client = Stub([image(10, 1)], failure=gone)
    seen: list[Listed] = []

    async def consume() -> None:
        async for listed in products(client, [1, 2]):
            seen.append(listed)

    with pytest.raises(bx.BatchError):
        await consume()
    assert seen == []  # product 1 is not known complete: the failure is not its own


async def test_a_missing_product_is_reported_and_the_rest_listed_again() -> None:
    gone = bx.BatchError("gone", errors={"p1": bx.NotFound("Product was not found")}, product_id=2)
    client = Stub([image(10, 1)], failure=gone)
    listed = await collect(client, [1, 2, 3])
    assert [(entry.product_id, len(entry.images), entry.error) for entry in listed] == [
        (1, 1, None),
        (2, 0, gone.errors["p1"]),
        (3, 0, None),
    ]
    assert client.asked == [1, 2, 3, 3]
