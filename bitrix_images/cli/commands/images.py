"""``list``, ``get``, ``add``, ``delete``, ``fields``: one to one onto ``client.images``."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

import attrs

from ...sync.listing import products
from ..options import AddOptions, ImageOptions, ListOptions
from ..output import emit, image_json, warning
from .jobs import Failed

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["add_image", "delete_image", "get_image", "list_fields", "list_images"]


async def list_images(client: BitrixClient, options: ListOptions, out: IO[str]) -> int:
    select, fields, ids = options.select, options.fields, options.product_ids
    if len(ids) == 1:
        async for image in client.images.list(ids[0], select=select):
            emit(image_json(image, fields), out)
        return 0
    missing = 0
    async for listed in products(client, ids, select=select):
        if listed.error is not None:
            # As mirror does: a product that is gone or closed to us is named, the rest listed.
            missing += 1
            warning(f"product {listed.product_id} skipped: {listed.error.description}")
            continue
        for image in listed.images:
            emit(image_json(image, fields), out)
    if missing:
        raise Failed(f"{missing} products could not be listed (see the warnings)")
    return 0


async def get_image(client: BitrixClient, options: ImageOptions, out: IO[str]) -> int:
    image = await client.images.get(options.product_id, options.image_id)
    emit(image_json(image, options.fields), out)
    return 0


async def add_image(client: BitrixClient, options: AddOptions, out: IO[str]) -> int:
    if options.file.is_dir():
        raise ValueError(f"{options.file} is a directory, not an image file")
    image = await client.images.add(
        options.product_id, options.file, name=options.name, type=options.type
    )
    emit(image_json(image, options.fields), out)
    return 0


async def delete_image(client: BitrixClient, options: ImageOptions, out: IO[str]) -> int:
    await client.images.delete(options.product_id, options.image_id)
    emit({"id": options.image_id, "product_id": options.product_id, "deleted": True}, out)
    return 0


async def list_fields(client: BitrixClient, out: IO[str]) -> int:
    fields = await client.images.fields()
    emit({name: attrs.asdict(info) for name, info in fields.items()}, out)
    return 0
