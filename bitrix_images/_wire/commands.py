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
    "IMAGE_HEAD",
    "LIST",
    "add_params",
    "add_query",
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

# The formats CFile::GetImageExtensions accepts (catalog-product-image-add.md: "only image
# extensions are accepted"), recognised by their headers, not a magic number alone: text
# that starts "BM" or "GIF89a" is not sent as an image.
_PNG: Final = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"  # signature, then IHDR, 13 bytes
# JPEG: SOI, then a marker a JPEG can start with: APPn, DQT, DHT, SOFn, DRI, COM.
_JPEG_NEXT: Final = frozenset((*range(0xE0, 0xF0), 0xDB, 0xC4, *range(0xC0, 0xD0), 0xDD, 0xFE))
_WEBP_CHUNKS: Final = (b"VP8 ", b"VP8L", b"VP8X")
# BMP's DIB header sizes: BITMAPCOREHEADER (12), INFOHEADER (40), V2/V3 (52/56), OS/2 2.x
# (64), V4 (108), V5 (124).
_DIB_SIZES: Final = frozenset((12, 40, 52, 56, 64, 108, 124))
# The bytes base64-encoded at a time (a multiple of 3: no padding inside the string).
_CHUNK: Final = 3 * 2**20
#: The bytes ``is_image`` reads at most.
IMAGE_HEAD: Final = 32


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
    """
    Whether *content* starts with a JPEG, PNG, GIF, WEBP or BMP header (the first
    ``IMAGE_HEAD`` bytes are enough): PNG's IHDR with a size, JPEG's SOI and a marker, GIF's
    signature and screen size, RIFF/WEBP and a VP8 chunk, BMP with a DIB header and a size.
    """
    head = bytes(content[:IMAGE_HEAD])
    if head.startswith(_PNG):
        return len(head) >= 24 and _u32be(head, 16) > 0 and _u32be(head, 20) > 0
    if head.startswith(b"\xff\xd8\xff"):
        return len(head) >= 4 and head[3] in _JPEG_NEXT
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return len(head) >= 10 and _u16le(head, 6) > 0 and _u16le(head, 8) > 0
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return head[12:16] in _WEBP_CHUNKS
    if head[:2] == b"BM":
        return _is_bmp(head)
    return False


def _is_bmp(head: bytes) -> bool:
    dib = _u32le(head, 14) if len(head) >= 24 else 0
    if dib not in _DIB_SIZES:
        return False
    if dib == 12:  # BITMAPCOREHEADER: 16-bit width, height, planes (= 1)
        return _u16le(head, 18) > 0 and _u16le(head, 20) > 0 and _u16le(head, 22) == 1
    if len(head) < 28:
        return False
    width = _u32le(head, 18)
    height = int.from_bytes(head[22:26], "little", signed=True)  # negative: top-down
    return 0 < width < 2**31 and height != 0 and _u16le(head, 26) == 1


def _u16le(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little")


def _u32le(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def _u32be(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


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


def add_params(
    product_id: int, name: str, content: bytes, type: ImageType, *, checked: bool = False
) -> dict[str, object]:
    """An add's parameters; ``ValueError`` unless *content* is an image (or *checked*)."""
    if not (checked or is_image(content)):
        raise ValueError(f"{name!r} is not a JPEG, PNG, GIF, WEBP or BMP image")
    return {
        "fields": {"productId": product_id, "type": type.value},
        # catalog-product-image-add.md: [name, base64] at the top level, no data: prefix.
        "fileContent": [name, base64.b64encode(content).decode("ascii")],
    }


def add_query(product_id: int, name: str, content: bytes, type: ImageType) -> str:
    """
    An add command's query string, as ``http_build_query(add_params(...))`` builds it, with
    its memory bounded: the base64 is made and URL-escaped in chunks (``quote_plus`` of the
    whole string took 16 times the file's size); the query is about 1.4 times the file, and
    building it about 3 times at the peak.
    """
    params = add_params(product_id, name, b"", type, checked=is_image(content))
    head = protocol.http_build_query(params)
    # fileContent is the last parameter and its base64 the last value: the query ends "=".
    if not head.endswith("="):  # pragma: no cover -- add_params' order is fixed above
        raise AssertionError("fileContent must be the last parameter")
    parts = [head]
    for start in range(0, len(content), _CHUNK):
        encoded = base64.b64encode(content[start : start + _CHUNK]).decode("ascii")
        # What quote_plus does to base64's alphabet: only "+", "/" and "=" are escaped.
        parts.append(encoded.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"))
    return "".join(parts)


def same_origin(url: URL, origin: URL) -> bool:
    """Scheme, host and port equal, the way browsers compare them (RFC 6454)."""
    # yarl keeps an explicit default port (":443") and compares URLs as text, so the parts
    # are compared one by one, with the scheme's default port filled in.
    return (
        url.scheme.lower() == origin.scheme.lower()
        and (url.host or "").lower().rstrip(".") == (origin.host or "").lower().rstrip(".")
        and url.port == origin.port
    )
