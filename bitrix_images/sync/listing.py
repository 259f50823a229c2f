"""
Whole products from ``client.images.list_many``: each product once, complete or failed.

The jobs (``mirror``, ``upload``) decide per product: what to download, prune, add or
delete. They need to know when a product's listing is complete, including a product with no
images at all (``list_many`` yields nothing for it), and they must tell a product whose
listing failed from an empty one: a failed listing is never an empty product.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from ..exceptions import AccessDenied, BatchError, BitrixError, MalformedResponse, NotFound
from ..models import ProductImage
from .ids import Ids, unique

if TYPE_CHECKING:
    from ..client import BitrixClient

__all__ = ["Listed", "products"]

# A product's own listing errors that another product would not share: report it, go on.
# MalformedResponse here is one product's answer (a bad image record, more images than
# list_many holds); a whole answer that is malformed fails the batch, not one command.
UNLISTABLE: Final = (NotFound, AccessDenied, MalformedResponse)


@attrs.frozen
class Listed:
    """One product: every image it has (``error is None``), or why it could not be listed."""

    product_id: int
    images: tuple[ProductImage, ...] = ()
    error: BitrixError | None = None


async def products(
    client: BitrixClient,
    product_ids: Ids,
    *,
    select: Sequence[str] | None = None,
) -> AsyncIterator[Listed]:
    """
    Each product of *product_ids* in order, once, with all its images or its error.

    A product that is gone or forbidden (``NotFound``, ``AccessDenied``) comes with its
    error and the listing goes on: ``list_many`` yields products in input order, so the
    ids handed to it and not yet finished are known exactly, and it is started again on
    the ids after the failed one. Any other failure propagates (it would repeat for every
    product). A product's images are held until the next product starts, so each one is
    complete when it is yielded.
    """
    source = unique(product_ids)
    unfinished: deque[int] = deque()  # handed to list_many, not yet yielded
    replay: list[int] = []
    while True:
        current: int | None = None
        images: list[ProductImage] = []
        try:
            feed = _feed(replay, source, unfinished)
            listing = (
                client.images.list_many(feed)
                if select is None
                else client.images.list_many(feed, select=select)
            )
            async for image in listing:
                product_id = image.product_id
                if product_id is None:
                    raise MalformedResponse(f"image {image.id} came without its productId")
                if product_id != current:
                    if product_id not in unfinished:
                        raise MalformedResponse(
                            f"the portal sent images of product {product_id}, not asked for"
                        )
                    if current is not None:
                        yield Listed(unfinished.popleft(), tuple(images))
                        images = []
                    # Products before this one had no images: they are complete.
                    while unfinished[0] != product_id:
                        yield Listed(unfinished.popleft())
                    current = product_id
                images.append(image)
        except BatchError as error:
            first = next(iter(error.errors.values()), None)
            if (
                error.product_id is None
                or error.product_id not in unfinished
                or not isinstance(first, UNLISTABLE)
            ):
                # Not one product's own failure, or one this listing cannot place: the
                # products in flight are not known to be complete, so nothing is yielded.
                raise
            # Products before the failed one are complete (the one in hand, then empty
            # ones); those after it were in flight and are listed again.
            while unfinished and unfinished[0] != error.product_id:
                product_id = unfinished.popleft()
                yield Listed(product_id, tuple(images) if product_id == current else ())
                images = []
            unfinished.popleft()
            yield Listed(error.product_id, error=first)
            replay = list(unfinished)
            unfinished.clear()
            continue
        if current is not None:
            yield Listed(unfinished.popleft(), tuple(images))
        while unfinished:
            yield Listed(unfinished.popleft())
        return


async def _feed(
    replay: list[int], source: AsyncIterator[int], unfinished: deque[int]
) -> AsyncIterator[int]:
    """The ids to list: *replay* first, then the rest of *source*, noting each one."""
    for product_id in replay:
        unfinished.append(product_id)
        yield product_id
    async for product_id in source:
        unfinished.append(product_id)
        yield product_id
