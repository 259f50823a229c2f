"""
The product images resource: ``client.images``.

Wraps ``catalog.productImage.list / get / add / delete / getFields``
(api-reference/catalog/product-image/) and the download of an image's signed URL.
Every argument is checked before any request is sent.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import os
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, Final

import attrs
from yarl import URL

from ._calls.batch import Outcome, run_batch
from ._calls.caller import Caller
from ._calls.retry import Attempts
from ._net import files as _files
from ._wire import protocol as _protocol
from ._wire.converters import SELECTABLE, Converter, to_wire_name
from ._wire.ids import each_id
from ._wire.protocol import Command
from ._wire.validate import check_int
from .exceptions import BatchError, BitrixError, MalformedResponse
from .models import FieldInfo, ImageType, ProductImage, ProductListing
from .pagination import AsyncPaginator, Page

__all__ = ["Images"]

LIST: Final = "catalog.productImage.list"
GET: Final = "catalog.productImage.get"
ADD: Final = "catalog.productImage.add"
DELETE: Final = "catalog.productImage.delete"
FIELDS: Final = "catalog.productImage.getFields"

# The most images of one product list_many holds before yielding it. A product is yielded
# whole or not at all (BatchError), so its pages are held until the last one; real products
# have tens of images, and a portal that keeps sending "next" must not grow memory forever.
MAX_PRODUCT_IMAGES: Final = 10_000

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


def _list_query(select: Sequence[str] | None) -> str:
    """The part of a list command's query that is the same for every product."""
    return "" if select is None else "&" + _protocol.http_build_query({"select": list(select)})


def _list_params(product_id: int, select: Sequence[str] | None, start: int) -> dict[str, Any]:
    params: dict[str, Any] = {"productId": product_id}
    if select is not None:
        params["select"] = list(select)
    params["start"] = start
    return params


def _list_command(product_id: int, common: str, start: int) -> Command:
    # The query string is built here directly: ids and offsets are plain ints, and a
    # generic PHP encoder per command was the costliest step per product.
    return LIST, f"productId={product_id}{common}&start={start}"


def _image_params(product_id: int, image_id: int) -> dict[str, int]:
    return {"productId": check_id(product_id, "product_id"), "id": check_id(image_id, "image_id")}


def _add_params(product_id: int, name: str, content: bytes, type: ImageType) -> dict[str, object]:
    """An add's parameters; ``ValueError`` unless *content* is an image."""
    if not is_image(content):
        raise ValueError(f"{name!r} is not a JPEG, PNG, GIF, WEBP or BMP image")
    return {
        "fields": {"productId": product_id, "type": type.value},
        # catalog-product-image-add.md: [name, base64] at the top level, no data: prefix.
        "fileContent": [name, base64.b64encode(content).decode("ascii")],
    }


@attrs.define
class _Product:
    """One product's listing in ``list_products``: its pages as the portal sent them."""

    product_id: int
    start: int = 0
    # The image records of each page, turned into ProductImage only when the product is
    # yielded: a batch's 2,500 objects made at once outlived the young GC generation and
    # cost more in collections than the objects themselves (benchmarks/RESULTS.md, W3).
    pages: list[Sequence[object]] = attrs.Factory(list)
    count: int = 0
    error: BitrixError | None = None


def product_failure(listing: ProductListing) -> BatchError:
    """The ``BatchError`` that ``list_many`` raises for a product whose listing failed."""
    error = listing.error
    assert error is not None  # noqa: S101 -- only a failed listing is passed
    return BatchError(
        f"{LIST} failed for product {listing.product_id}: {error.description}",
        errors={str(listing.product_id): error},
        attempts=error.attempts,
        product_id=listing.product_id,
    )


class Images:
    """``client.images``: list, list_products, list_many, get, add, delete, fields, download."""

    def __init__(self, caller: Caller, converter: Converter, *, batches_in_flight: int = 4):
        self._caller = caller
        self._converter = converter
        self._batches_in_flight = batches_in_flight

    # --- reading -------------------------------------------------------------------------

    def list(
        self, product_id: int, *, select: Sequence[str] | None = None, start: int = 0
    ) -> AsyncPaginator[ProductImage]:
        """
        The images of one product, as an ``AsyncPaginator``.

        ``async for image in client.images.list(1)`` walks every image; ``.pages()`` gives
        the pages. A product answered whole costs one request.
        """
        product_id = check_id(product_id, "product_id")
        names = check_select(select)
        start = check_int("start", start, minimum=0)

        async def fetch(offset: int) -> Page[ProductImage]:
            envelope = await self._caller.call(LIST, _list_params(product_id, names, offset))
            return Page(
                items=tuple(self._images(envelope.result, LIST)),
                total=envelope.total,
                next=envelope.next,
                start=offset,
            )

        return AsyncPaginator(fetch, start=start, method=LIST)

    async def list_products(
        self,
        product_ids: Iterable[int] | AsyncIterable[int],
        *,
        select: Sequence[str] | None = None,
    ) -> AsyncGenerator[ProductListing, None]:
        """
        Each product of *product_ids*, in input order, whole: all its images, or its error.

        Up to 50 ``catalog.productImage.list`` commands go in one ``batch`` request (batch.md),
        with a few batches in flight; *product_ids* is read lazily, never more than those
        batches ahead of the consumer. Each command is retried on its own (load refusals,
        transient errors) and followed through its pages. A product whose listing failed
        for good (gone, forbidden, a malformed answer, its retries spent) comes with that
        error and the others go on; a failure of a whole request is raised.
        """
        names = check_select(select)
        source = each_id(product_ids)
        window: deque[asyncio.Task[builtins.list[_Product]]] = deque()
        exhausted = False

        async def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(window) < self._batches_in_flight:
                chunk: builtins.list[int] = []
                async for product_id in source:
                    chunk.append(product_id)
                    if len(chunk) == _protocol.BATCH_MAX_COMMANDS:
                        break
                else:
                    exhausted = True
                if chunk:
                    window.append(asyncio.ensure_future(self._list_chunk(chunk, names)))

        try:
            await fill()
            while window:
                products = await window[0]
                window.popleft()
                await fill()
                for product in products:
                    yield self._listing(product)
        finally:
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)
            await source.aclose()

    async def list_many(
        self,
        product_ids: Iterable[int] | AsyncIterable[int],
        *,
        select: Sequence[str] | None = None,
    ) -> AsyncIterator[ProductImage]:
        """
        The images of many products, grouped by product in input order.

        ``list_products`` flattened: a product that could not be listed raises
        ``BatchError`` after every image before it was yielded, and nothing of it or after
        it is. Nothing is dropped silently.
        """
        async with contextlib.aclosing(self.list_products(product_ids, select=select)) as found:
            async for listing in found:
                if listing.error is not None:
                    raise product_failure(listing)
                for image in listing.images:
                    yield image

    async def _list_chunk(
        self, product_ids: builtins.list[int], select: Sequence[str] | None
    ) -> builtins.list[_Product]:
        """List up to 50 products through batch requests until each is complete or failed."""
        products = {f"p{i}": _Product(product_id) for i, product_id in enumerate(product_ids)}
        common = _list_query(select)

        def proceed(
            key: str, result: object, following: int | None
        ) -> Command | BitrixError | None:
            """Keep a page's images; say what follows (its next page, or the error)."""
            product = products[key]
            items = _protocol.items_of(result, "productImages", method=LIST)
            product.pages.append(items)
            product.count += len(items)
            if product.count > MAX_PRODUCT_IMAGES:
                return MalformedResponse(
                    f"product {product.product_id} has more than {MAX_PRODUCT_IMAGES} images; "
                    "refusing to hold more of them",
                    method=LIST,
                )
            if following is None:
                return None
            if following <= product.start:
                return MalformedResponse(
                    f"the portal sent next={following} after start={product.start}", method=LIST
                )
            product.start = following
            return _list_command(product.product_id, common, following)

        outcomes = await run_batch(
            self._caller,
            {key: _list_command(p.product_id, common, 0) for key, p in products.items()},
            proceed=proceed,
        )
        for key, product in products.items():
            product.error = outcomes[key].error
        return builtins.list(products.values())

    def _listing(self, product: _Product) -> ProductListing:
        """
        A listed product, every page converted at once: a malformed image fails its
        product the way a failed command does, never a product half yielded.
        """
        if product.error is not None:
            return ProductListing(product.product_id, (), product.error)
        pages, product.pages = product.pages, []
        convert = self._converter.images
        try:
            if len(pages) == 1:
                images = tuple(convert(pages[0], method=LIST))
            else:
                images = tuple(image for page in pages for image in convert(page, method=LIST))
        except MalformedResponse as error:
            return ProductListing(product.product_id, (), error)
        return ProductListing(product.product_id, images)

    async def get(self, product_id: int, image_id: int) -> ProductImage:
        """One image of a product (catalog-product-image-get.md)."""
        envelope = await self._caller.call(GET, _image_params(product_id, image_id))
        return self._one(envelope.result, GET)

    async def fields(self) -> Mapping[str, FieldInfo]:
        """The image fields, keyed by wire name (``"productId"``)."""
        envelope = await self._caller.call(FIELDS, {})
        result = envelope.result
        if not isinstance(result, Mapping) or "productImage" not in result:
            raise MalformedResponse("the answer has no 'productImage' map", method=FIELDS)
        return self._converter.fields(result["productImage"], method=FIELDS)

    # --- writing -------------------------------------------------------------------------

    async def add(
        self,
        product_id: int,
        file: Path | str | bytes,
        *,
        name: str | None = None,
        type: ImageType = ImageType.MORE_PHOTO,
    ) -> ProductImage:
        """
        Attach an image to a product; return it as the portal stored it.

        *file* is a path or the bytes themselves (then *name* is required). The content must
        be a JPEG, PNG, GIF, WEBP or BMP image. The call is never replayed after its answer
        was lost (``OutcomeUnknown``), so it cannot create the image twice.
        """
        product_id = check_id(product_id, "product_id")
        if not isinstance(type, ImageType):
            raise TypeError(f"type must be an ImageType, got {type!r}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError("name must be a non-empty str")
        if isinstance(file, (bytes, bytearray, memoryview)):
            if name is None:
                raise ValueError("name is required when file is bytes")
            content = bytes(file)
        elif isinstance(file, (str, Path)):
            path = Path(file)
            content = await asyncio.to_thread(_read_file, path)
            name = name if name is not None else path.name
        else:
            raise TypeError(f"file must be a Path, str or bytes, got {type_name(file)}")
        assert name is not None  # noqa: S101 -- set on every branch above
        if "/" in name or "\\" in name:
            raise ValueError("name must be a file name, not a path")
        envelope = await self._caller.call(
            ADD, _add_params(product_id, name, content, type), idempotent=False
        )
        return self._one(envelope.result, ADD)

    async def delete(self, product_id: int, image_id: int) -> None:
        """Remove an image from a product. Never replayed after a lost answer."""
        params = _image_params(product_id, image_id)
        envelope = await self._caller.call(DELETE, params, idempotent=False)
        if envelope.result is not True:
            raise MalformedResponse(
                f"the portal answered {envelope.result!r} instead of true", method=DELETE
            )

    # --- commands, for the jobs' batches (``_calls.batch.run_batch``) ---------------------

    def _list_command(
        self, product_id: int, *, select: Sequence[str] | None = None, start: int = 0
    ) -> Command:
        """A list command of one product's page (checked like ``list``)."""
        product_id = check_id(product_id, "product_id")
        start = check_int("start", start, minimum=0)
        return _list_command(product_id, _list_query(check_select(select)), start)

    def _add_command(
        self,
        product_id: int,
        name: str,
        content: bytes,
        type: ImageType = ImageType.MORE_PHOTO,
    ) -> Command:
        """An add command of *content* as *name* (blocking: encodes the bytes).

        Raises ``ValueError`` when *content* is not an image."""
        product_id = check_id(product_id, "product_id")
        query = _protocol.http_build_query(_add_params(product_id, name, content, type))
        return ADD, query

    def _delete_command(self, product_id: int, image_id: int) -> Command:
        """A delete command of one image."""
        params = _image_params(product_id, image_id)
        return DELETE, f"productId={params['productId']}&id={params['id']}"

    async def _run(
        self, commands: Mapping[str, Command], *, tries: Mapping[str, Attempts] | None = None
    ) -> dict[str, Outcome]:
        """Send *commands* through ``run_batch``: one ``Outcome`` per key."""
        return await run_batch(self._caller, commands, tries=tries)

    # --- files ---------------------------------------------------------------------------

    async def download(
        self, image: ProductImage, dest: Path | str, *, durable: bool = True
    ) -> Path:
        """
        Save an image's file; return the path written.

        *dest* is a directory (the file keeps the image's name) or a file path. The bytes go
        to a temporary file beside the target, which is renamed into place only when
        complete: a failure leaves no partial file. With *durable* (the default) the file is
        also fsynced before the rename, so that even a power cut cannot leave an empty or
        partial file under the final name; the client's committer thread does that for
        the files that finish together, off the event loop. ``durable=False`` skips the
        fsync (benchmarks/RESULTS.md W4) where a crash is handled otherwise.
        Only the portal's own origin is fetched, because the signed URL carries credentials.
        A target or a folder that is a symbolic link is refused with an ``OSError``
        (``errno.ELOOP``) before anything is fetched; catch ``OSError`` with ``BitrixError``
        to skip one image and go on.
        """
        if not isinstance(image, ProductImage):
            raise TypeError(f"image must be a ProductImage, got {type_name(image)}")
        if not isinstance(dest, (str, Path)):
            raise TypeError(f"dest must be a Path or str, got {type_name(dest)}")
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be a bool, got {type_name(durable)}")
        url = image.download_url
        if url is None:
            raise ValueError("the image has no download_url (was it left out of select?)")
        if not _same_origin(url, self._caller.auth.origin):
            # The signed URL carries the portal's credentials: it goes to the portal only.
            raise ValueError(
                f"refusing to fetch a download_url outside the portal's origin "
                f"({url.scheme}://{url.host}:{url.port} is not {self._caller.auth.origin})"
            )
        target, part = _files.reserve(os.fspath(dest), image)
        try:
            await self._caller.download(url, part, target, durable=durable)
        except BaseException:
            _files.discard(part)
            raise
        return Path(target)

    # --- answers -------------------------------------------------------------------------

    def _images(self, result: object, method: str) -> builtins.list[ProductImage]:
        items = _protocol.items_of(result, "productImages", method=method)
        return self._converter.images(items, method=method)

    def _one(self, result: object, method: str) -> ProductImage:
        if not isinstance(result, Mapping) or "productImage" not in result:
            raise MalformedResponse("the answer has no 'productImage'", method=method)
        return self._converter.image(result["productImage"], method=method)


def _same_origin(url: URL, origin: URL) -> bool:
    """Scheme, host and port equal, the way browsers compare them (RFC 6454)."""
    # yarl keeps an explicit default port (":443") and compares URLs as text, so the parts
    # are compared one by one, with the scheme's default port filled in.
    return (
        url.scheme.lower() == origin.scheme.lower()
        and (url.host or "").lower().rstrip(".") == (origin.host or "").lower().rstrip(".")
        and url.port == origin.port
    )


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path.read_bytes()


def type_name(value: object) -> str:
    return type(value).__name__
