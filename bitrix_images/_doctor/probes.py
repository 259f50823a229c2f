"""
The checks of ``client.doctor()`` that go beyond one read: ``public_files`` fetches an
image's file both ways, ``batch`` sends a ``batch``, ``write`` adds an image and deletes it.
Their order is ``checks.STEPS``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import secrets
import shutil
import tempfile
from typing import Final

from .._net.public import Failed
from .._wire import protocol
from .._wire.commands import ADD, DELETE, LIST, add_params, image_params
from .._wire.converters import Converter
from .._wire.public import CLOSED, LinkRefused
from ..exceptions import AccessDenied, AuthError, BitrixError, NotFound, OutcomeUnknown
from ..models import ImageType, ProductImage
from .visit import Finding, Visit, _code, _describe, _int, fail, ok, skip, warn

__all__ = ["PIXEL", "batch", "public_files", "write"]

#: A 1x1 transparent PNG, the image the write check adds and deletes.
PIXEL: Final = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="
)


async def public_files(visit: Visit) -> Finding:
    # Protocol notes 6, 10.1: detailUrl is /upload/'s static file, fetched with no credentials
    # outside REST; downloadUrl is the signed REST download. The same bytes both ways let
    # mirror take the public link; else it fetches each file through REST.
    image = _linked_image(visit)
    if image is None or visit.links is None:
        return skip("no image listed with both links to fetch")
    what = f"image {image.id} of product {image.product_id}"
    folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="bitrix-images-doctor-")
    try:
        try:
            public = await visit.links.public_bytes(
                image, os.path.join(folder, ".doctor-public.part")
            )
        except (Failed, LinkRefused) as failure:
            return _public_refused(visit, what, failure)
        rest = await visit.links.rest_bytes(image, folder)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    if public != rest:
        return warn(
            f"{what}: the public link gives {len(public)} bytes that differ from REST's "
            f"{len(rest)}",
            _rest_hint(visit, "mirror then fetches every file through REST"),
        )
    return ok(f"{what}: the public link gives the same {len(public)} bytes as REST")


async def batch(visit: Visit) -> Finding:
    # batch.md: one harmless read inside a batch.
    result = await visit.caller.batch({"time": ("server.time", {})})
    if "time" in result.errors:
        error = result.errors["time"]
        return fail(f"a batch's command failed: {_describe(error)}")
    if "time" not in result.results:
        return fail("the batch answered without its command's result")
    return ok("a batch of one command was answered")


async def write(visit: Visit) -> Finding:
    # A 1x1 PNG added inside a batch (catalog-product-image-add.md, batch.md) and deleted.
    product = visit.write_check
    assert product is not None  # noqa: S101 -- only run with write_check
    name = f"bitrix-images-doctor-{secrets.token_hex(4)}.png"
    params = add_params(product, name, PIXEL, ImageType.MORE_PHOTO)
    in_batch = True
    try:
        result = await visit.caller.batch({"add": (ADD, protocol.http_build_query(params))})
        if "add" in result.errors:
            raise result.errors["add"]
        added = result.results.get("add")
    except BitrixError as error:
        if _code(error) != "ERROR_BATCH_METHOD_NOT_ALLOWED":
            return _refused_add(error, product, name)
        in_batch = False
        try:
            added = (await visit.caller.call(ADD, params, idempotent=False)).result
        except BitrixError as plain:
            return _refused_add(plain, product, name)
    image = _int(added.get("productImage", {}).get("id")) if isinstance(added, dict) else None
    if image is None:
        return fail(
            f"the add on product {product} answered without an image id",
            f"look for {name} on product {product} and delete it",
        )
    try:
        deleted = await visit.caller.call(DELETE, image_params(product, image), idempotent=False)
    except BitrixError as error:
        return fail(
            f"image {image} was added to product {product}, but its delete failed: "
            f"{_describe(error)}",
            f"delete it by hand: bitrix-images delete {product} {image}",
        )
    if deleted.result is not True:
        return fail(
            f"the delete of image {image} answered {deleted.result!r}, not true",
            f"check product {product} and delete image {image} if it is still there",
        )
    if in_batch:
        return ok(f"product {product}: a 1x1 image added inside a batch, then deleted")
    return warn(
        f"product {product}: writes work, but not inside a batch (ERROR_BATCH_METHOD_NOT_ALLOWED)",
        "upload then sends one add per request; --one-per-request spares the refused batches",
    )


def _refused_add(error: BitrixError, product: int, name: str) -> Finding:
    if isinstance(error, OutcomeUnknown):
        return fail(
            f"the answer to the add on product {product} was lost: {_describe(error)}",
            f"look for {name} on product {product} and delete it",
        )
    if isinstance(error, (AccessDenied, AuthError)):
        return fail(
            f"no write access to product {product}: {_describe(error)}",
            "the webhook's user needs the right to edit the catalog's products",
        )
    if isinstance(error, NotFound):
        return fail(f"product {product} was not found: {_describe(error)}")
    return fail(f"the add on product {product} failed: {_describe(error)}")


def _linked_image(visit: Visit) -> ProductImage | None:
    """The first image ``read`` listed that has both links, or ``None``."""
    converter = Converter(visit.caller.auth.origin)
    for row in visit.image_rows:
        try:
            image = converter.image(row, method=LIST)
        except BitrixError:
            continue
        if image.detail_url is not None and image.download_url is not None:
            return image
    return None


def _public_refused(visit: Visit, what: str, failure: Failed | LinkRefused) -> Finding:
    if isinstance(failure, LinkRefused):
        detail = f"{what}: the public link was refused ({failure})"
    elif failure.reason in CLOSED:
        detail = (
            f"{what}: /upload/ is closed to visitors (the public link answered {failure.reason})"
        )
    else:
        detail = f"{what}: the public link did not give the complete image ({failure.reason})"
    return warn(detail, _rest_hint(visit, "mirror then fetches such files through REST"))


def _rest_hint(visit: Visit, start: str) -> str:
    """What fetching through REST costs: one request a file, at the client's rate."""
    rate = visit.caller.rate_limit.rate
    if not math.isfinite(rate):
        return f"{start}, one request per file, paced by the portal's request limit"
    per_hour = math.floor(rate * 3600)
    return (
        f"{start}, one request per file: at {rate:g} requests/s, about {per_hour:,} images an hour"
    )
