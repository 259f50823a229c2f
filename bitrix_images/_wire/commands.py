"""
The product images' requests as data: method names, argument checks, parameters and the
query strings of batch commands (api-reference/catalog/product-image/). Pure: no I/O.

``images.Images`` calls with these, and builds the commands the jobs send in batches from
them, so that a ``fileContent`` is encoded and an image recognised in one place.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any, Final

from yarl import URL

from ..models import ImageType
from . import protocol
from .converters import SELECTABLE, to_wire_name
from .protocol import Command
from .validate import check_int

__all__ = [
    "ADD",
    "DELETE",
    "FIELDS",
    "GET",
    "LIST",
    "add_params",
    "check_id",
    "check_select",
    "delete_command",
    "image_params",
    "is_image",
    "list_command",
    "list_params",
    "list_query",
    "same_origin",
]

LIST: Final = "catalog.productImage.list"
GET: Final = "catalog.productImage.get"
ADD: Final = "catalog.productImage.add"
DELETE: Final = "catalog.productImage.delete"
FIELDS: Final = "catalog.productImage.getFields"

# Magic numbers of the formats CFile::GetImageExtensions accepts (catalog-product-image-add.md:
# "only image extensions are accepted").
_MAGIC: Final = (
    (b"\xff\xd8\xff", 0),  # JPEG
    (b"\x89PNG\r\n\x1a\n", 0),  # PNG
    (b"GIF87a", 0),
    (b"GIF89a", 0),
    (b"WEBP", 8),  # RIFF....WEBP
    (b"BM", 0),  # BMP
)


def check_id(value: object, what: str) -> int:
    """A positive ``int`` id (``bool`` and numeric strings are refused)."""
    return check_int(what, value, minimum=1)


def check_select(select: object) -> tuple[str, ...] | None:
    """Wire names for ``select``; snake_case field names are accepted too. ``id`` is always in."""
    if select is None:
        return None
    if isinstance(select, (str, bytes)) or not isinstance(select, Iterable):
        raise TypeError("select must be a sequence of field names")
    names: list[str] = ["id"]
    for field in select:
        if not isinstance(field, str):
            raise TypeError(f"select names must be str, got {type(field).__name__}")
        wire = to_wire_name(field)
        if wire not in SELECTABLE:
            raise ValueError(
                f"{field!r} is not a field of ProductImage; choose from {', '.join(SELECTABLE)}"
            )
        if wire not in names:
            names.append(wire)
    return tuple(names)


def is_image(content: bytes) -> bool:
    """Whether *content* starts like a JPEG, PNG, GIF, WEBP or BMP file."""
    return any(content[offset : offset + len(magic)] == magic for magic, offset in _MAGIC)


def list_query(select: Sequence[str] | None) -> str:
    """The part of a list command's query that is the same for every product."""
    return "" if select is None else "&" + protocol.http_build_query({"select": list(select)})


def list_params(product_id: int, select: Sequence[str] | None, start: int) -> dict[str, Any]:
    """A list call's parameters (the ids checked already)."""
    params: dict[str, Any] = {"productId": product_id}
    if select is not None:
        params["select"] = list(select)
    params["start"] = start
    return params


def list_command(product_id: int, common: str, start: int) -> Command:
    """A list command; *common* is ``list_query(select)``."""
    # The query string is built here directly: ids and offsets are plain ints, and a
    # generic PHP encoder per command was the costliest step per product.
    return LIST, f"productId={product_id}{common}&start={start}"


def image_params(product_id: int, image_id: int) -> dict[str, int]:
    """The parameters naming one image (get, delete), checked."""
    return {"productId": check_id(product_id, "product_id"), "id": check_id(image_id, "image_id")}


def delete_command(product_id: int, image_id: int) -> Command:
    """A delete command of one image, checked."""
    params = image_params(product_id, image_id)
    return DELETE, f"productId={params['productId']}&id={params['id']}"


def add_params(product_id: int, name: str, content: bytes, type: ImageType) -> dict[str, object]:
    """An add's parameters; ``ValueError`` unless *content* is an image."""
    if not is_image(content):
        raise ValueError(f"{name!r} is not a JPEG, PNG, GIF, WEBP or BMP image")
    return {
        "fields": {"productId": product_id, "type": type.value},
        # catalog-product-image-add.md: [name, base64] at the top level, no data: prefix.
        "fileContent": [name, base64.b64encode(content).decode("ascii")],
    }


def same_origin(url: URL, origin: URL) -> bool:
    """Scheme, host and port equal, the way browsers compare them (RFC 6454)."""
    # yarl keeps an explicit default port (":443") and compares URLs as text, so the parts
    # are compared one by one, with the scheme's default port filled in.
    return (
        url.scheme.lower() == origin.scheme.lower()
        and (url.host or "").lower().rstrip(".") == (origin.host or "").lower().rstrip(".")
        and url.port == origin.port
    )
