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

from ._calls.caller import Caller
from ._calls.retry import Attempts
from ._net import files as _files
from ._wire import protocol as _protocol
from ._wire.converters import SELECTABLE, Converter, to_wire_name
from ._wire.validate import check_int
from .exceptions import BatchError, BitrixError, MalformedResponse
from .models import FieldInfo, ImageType, ProductImage
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


async def _ids(source: Iterable[int] | AsyncIterable[int]) -> AsyncGenerator[int, None]:
    if isinstance(source, AsyncIterable):
        async for value in source:
            yield check_id(value, "product id")
    else:
        for value in source:
            yield check_id(value, "product id")


@attrs.define
class _Command:
    """One product's listing in ``list_many``: its pages as the portal sent them."""

    key: str
    product_id: int
    attempts: Attempts
    start: int = 0
    # The image records of each page, turned into ProductImage only when the product is
    # yielded: a batch's 2,500 objects made at once outlived the young GC generation and
    # cost more in collections than the objects themselves (benchmarks/RESULTS.md, W3).
    pages: list[Sequence[object]] = attrs.Factory(list)
    count: int = 0


class Images:
    """``client.images``: list, list_many, get, add, delete, fields and download."""

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

    async def list_many(
        self,
        product_ids: Iterable[int] | AsyncIterable[int],
        *,
        select: Sequence[str] | None = None,
    ) -> AsyncIterator[ProductImage]:
        """
        The images of many products, grouped by product in input order.

        Up to 50 ``catalog.productImage.list`` commands go in one ``batch`` request (batch.md),
        with a few batches in flight. *product_ids* is read lazily, never more than those
        batches ahead of the consumer. A command that failed for load or a transient error
        is sent again; one that cannot succeed raises ``BatchError`` after every image
        before it was yielded. Nothing is dropped silently.
        """
        if isinstance(product_ids, (str, bytes)) or not isinstance(
            product_ids, (Iterable, AsyncIterable)
        ):
            raise TypeError("product_ids must be an iterable or async iterable of ints")
        names = check_select(select)
        source = _ids(product_ids)
        window: deque[asyncio.Task[builtins.list[_Command | BatchError]]] = deque()
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
                outcomes = await window[0]
                window.popleft()
                await fill()
                for outcome in outcomes:
                    if isinstance(outcome, BatchError):
                        raise outcome
                    for image in self._product_images(outcome):
                        yield image
        finally:
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)
            await source.aclose()

    async def _list_chunk(
        self, product_ids: builtins.list[int], select: Sequence[str] | None
    ) -> builtins.list[_Command | BatchError]:
        """
        List up to 50 products through batch requests until each is complete or failed.

        Commands are resent (load refusals, transient errors) or continued (``next``) until
        every command before the first failed one is complete, so the images yielded before
        a ``BatchError`` are whole products, and a product is never yielded half-listed.
        """
        commands = {
            f"p{i}": _Command(f"p{i}", product_id, self._caller.attempts(idempotent=True))
            for i, product_id in enumerate(product_ids)
        }
        order = {key: index for index, key in enumerate(commands)}
        common = _list_query(select)
        pending = dict(commands)
        failed: dict[str, BitrixError] = {}
        cutoff = len(commands)  # commands from the first failed one on are not yielded
        while pending:
            # The query strings are built here directly: ids and offsets are plain ints, and
            # a generic PHP encoder per command was the costliest step per product.
            result = await self._caller.batch(
                {
                    key: (LIST, f"productId={command.product_id}{common}&start={command.start}")
                    for key, command in pending.items()
                }
            )
            again: dict[str, _Command] = {}
            delay = 0.0
            for key, command in pending.items():
                error = result.errors.get(key)
                if error is not None:
                    # Each command has its own retry driver: the same rules, attempts and
                    # wait budget as a whole call (README, "The portal's limits").
                    command.attempts.begin()
                    verdict = self._caller.judge(command.attempts, error, (LIST,))
                    if verdict.delay is not None:
                        again[key] = command
                        delay = max(delay, verdict.delay)
                        continue
                    error = verdict.error
                else:
                    error = self._advance(command, result.results, result.nexts, key, again)
                    if error is None:
                        continue
                failed[key] = error
                cutoff = min(cutoff, order[key])
            pending = {key: c for key, c in again.items() if order[key] < cutoff}
            if pending and delay > 0:
                await self._caller.wait(delay)
        outcomes: builtins.list[_Command | BatchError] = []
        for key, command in commands.items():
            if order[key] == cutoff:
                error = failed[key]
                outcomes.append(
                    BatchError(
                        f"{LIST} failed for product {command.product_id}: {error.description}",
                        # The failed product's own error first: it is the one that stopped.
                        errors={key: error, **failed},
                        attempts=error.attempts,
                        product_id=command.product_id,
                    )
                )
                break
            outcomes.append(command)
        return outcomes

    def _advance(
        self,
        command: _Command,
        results: Mapping[str, Any],
        nexts: Mapping[str, int],
        key: str,
        again: dict[str, _Command],
    ) -> BitrixError | None:
        """
        Take a command's answer: keep its images and queue its next page, if any.

        Returns ``None`` when the command is done or queued, or the error that ends it.
        """
        if key not in results:
            # Neither a result nor an error: a halted or truncated batch (batch.md).
            return MalformedResponse(
                "the batch answer has no result and no error for this command", method=LIST
            )
        items = _protocol.items_of(results[key], "productImages", method=LIST)
        command.pages.append(items)
        command.count += len(items)
        if command.count > MAX_PRODUCT_IMAGES:
            return MalformedResponse(
                f"product {command.product_id} has more than {MAX_PRODUCT_IMAGES} images; "
                "refusing to hold more of them",
                method=LIST,
            )
        following = nexts.get(key)
        if following is None:
            return None
        if following <= command.start:
            return MalformedResponse(
                f"the portal sent next={following} after start={command.start}", method=LIST
            )
        command.start = following
        again[key] = command
        return None

    def _product_images(self, command: _Command) -> builtins.list[ProductImage]:
        """
        A listed product's images, every page converted before any is yielded.

        A malformed image fails its product the way a failed command does: a ``BatchError``
        after the products before it, never a product half yielded.
        """
        pages, command.pages = command.pages, []
        convert = self._converter.images
        try:
            if len(pages) == 1:
                return convert(pages[0], method=LIST)
            return [image for page in pages for image in convert(page, method=LIST)]
        except MalformedResponse as error:
            raise BatchError(
                f"{LIST} failed for product {command.product_id}: {error.description}",
                errors={command.key: error},
                attempts=error.attempts,
                product_id=command.product_id,
            ) from None

    async def get(self, product_id: int, image_id: int) -> ProductImage:
        """One image of a product (catalog-product-image-get.md)."""
        params = {
            "productId": check_id(product_id, "product_id"),
            "id": check_id(image_id, "image_id"),
        }
        envelope = await self._caller.call(GET, params)
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
        if not is_image(content):
            raise ValueError(f"{name!r} is not a JPEG, PNG, GIF, WEBP or BMP image")
        params = {
            "fields": {"productId": product_id, "type": type.value},
            # catalog-product-image-add.md: [name, base64] at the top level, no data: prefix.
            "fileContent": [name, base64.b64encode(content).decode("ascii")],
        }
        envelope = await self._caller.call(ADD, params, idempotent=False)
        return self._one(envelope.result, ADD)

    async def delete(self, product_id: int, image_id: int) -> None:
        """Remove an image from a product. Never replayed after a lost answer."""
        params = {
            "productId": check_id(product_id, "product_id"),
            "id": check_id(image_id, "image_id"),
        }
        envelope = await self._caller.call(DELETE, params, idempotent=False)
        if envelope.result is not True:
            raise MalformedResponse(
                f"the portal answered {envelope.result!r} instead of true", method=DELETE
            )

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
