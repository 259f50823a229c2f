"""
Whole products from ``client.images.list_products``: each product once, complete or failed.

The jobs (``mirror``, ``upload``) decide per product: what to download, prune, add or
delete. They need to know when a product's listing is complete, including a product with no
images at all, and they must tell a product whose listing failed from an empty one: a
failed listing is never an empty product.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Final

from ..exceptions import AccessDenied, MalformedResponse, NotFound
from ..images import product_failure
from ..models import ProductListing
from .ids import Ids, unique

if TYPE_CHECKING:
    from ..client import BitrixClient

__all__ = ["Listed", "products"]

# A product's own listing errors that another product would not share: report it, go on.
# MalformedResponse here is one product's answer (a bad image record, more images than
# list_products holds); a whole answer that is malformed fails the batch, not one command.
UNLISTABLE: Final = (NotFound, AccessDenied, MalformedResponse)

# One product: every image it has (``error is None``), or why it could not be listed.
Listed = ProductListing


async def products(
    client: BitrixClient,
    product_ids: Ids,
    *,
    select: Sequence[str] | None = None,
) -> AsyncIterator[Listed]:
    """
    Each product of *product_ids* in order, once, with all its images or its error.

    ``client.images.list_products`` with repeated ids dropped: a product that is gone or
    forbidden (``NotFound``, ``AccessDenied``) or whose own answer is malformed comes with
    its error and the listing goes on. Any other failure is raised as ``list_many`` raises
    it (it would repeat for every product).
    """
    listings = client.images.list_products(unique(product_ids), select=select)
    async with contextlib.aclosing(listings):
        async for listing in listings:
            if listing.error is not None and not isinstance(listing.error, UNLISTABLE):
                raise product_failure(listing)
            for image in listing.images:
                # A job files images under their product: one the portal sent for
                # another product, or without one, is never filed anywhere.
                if image.product_id is None:
                    raise MalformedResponse(f"image {image.id} came without its productId")
                if image.product_id != listing.product_id:
                    raise MalformedResponse(
                        f"the portal sent images of product {image.product_id}, not asked for"
                    )
            yield listing
