"""``list``, ``get``, ``add``, ``delete``, ``fields``: one to one onto ``client.images``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import attrs

from ...exceptions import BitrixError, NotFound
from ...sync.listing import products
from ..options import AddOptions, ImageOptions, ListOptions
from ..output import emit, image_json, plural, snake_name, warning
from .jobs import Failed

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["add_image", "delete_image", "get_image", "list_fields", "list_images"]


@contextlib.contextmanager
def _found(product_id: int, image_id: int | None = None) -> Iterator[None]:
    """The portal's not-found (code 0, HTTP 400) as "product 5 not found"."""
    try:
        yield
    except NotFound as missing:
        raise Failed(_not_found(missing, product_id, image_id)) from None


def _not_found(missing: BitrixError, product_id: int, image_id: int | None) -> str:
    # "Product was not found" / "Image does not exist" (catalog/lib/controller/productimage.php)
    if image_id is not None and "product" not in missing.description.lower():
        return f"image {image_id} of product {product_id} not found"
    return f"product {product_id} not found"


async def list_images(client: BitrixClient, options: ListOptions, out: IO[str]) -> int:
    select, fields, ids = options.select, options.fields, options.product_ids
    if len(ids) == 1:
        with _found(ids[0]):
            async for image in client.images.list(ids[0], select=select):
                emit(image_json(image, fields), out)
        return 0
    missing = 0
    async for listed in products(client, ids, select=select):
        if listed.error is not None:
            # As mirror does: a product that is gone or closed to us is named, the rest listed.
            missing += 1
            gone = isinstance(listed.error, NotFound)
            reason = "not found" if gone else listed.error.description
            warning(f"product {listed.product_id} skipped: {reason}")
            continue
        for image in listed.images:
            emit(image_json(image, fields), out)
    if missing:
        raise Failed(f"{plural(missing, 'product')} could not be listed (see the warnings)")
    return 0


async def get_image(client: BitrixClient, options: ImageOptions, out: IO[str]) -> int:
    with _found(options.product_id, options.image_id):
        image = await client.images.get(options.product_id, options.image_id)
    emit(image_json(image, options.fields), out)
    return 0


async def add_image(client: BitrixClient, options: AddOptions, out: IO[str]) -> int:
    if options.file.is_dir():
        raise ValueError(f"{options.file} is a directory, not an image file")
    with _found(options.product_id):
        image = await client.images.add(
            options.product_id, options.file, name=options.name, type=options.type
        )
    emit(image_json(image, options.fields), out)
    return 0


async def delete_image(client: BitrixClient, options: ImageOptions, out: IO[str]) -> int:
    with _found(options.product_id, options.image_id):
        await client.images.delete(options.product_id, options.image_id)
    emit({"id": options.image_id, "product_id": options.product_id, "deleted": True}, out)
    return 0


async def list_fields(client: BitrixClient, out: IO[str]) -> int:
    """The fields keyed as ``list`` prints them (``create_time``), each with its wire name."""
    fields = await client.images.fields()
    emit(
        {
            snake_name(name): {"wire_name": name, **attrs.asdict(info)}
            for name, info in fields.items()
        },
        out,
    )
    return 0
