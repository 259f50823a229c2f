"""
The product images resource: ``client.images``.

Wraps ``catalog.productImage.list / get / add / delete / getFields``
(api-reference/catalog/product-image/) and the download of an image's file, through its
public link or its signed URL (``_calls.links``, through ``fetch.Files``).
Every argument is checked before any request is sent (``_wire.commands``). Many products
are listed through ``batch`` requests by ``_ProductLister``, on the batch primitive
(``_calls.batch.run_batch``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Final

import attrs

from ._calls.batch import Outcome, Packing, run_batch
from ._calls.caller import Caller
from ._calls.links import PublicLinks
from ._fetch import FetchedFile, Files, type_name
from ._wire import protocol as _protocol
from ._wire.commands import (
    ADD,
    DELETE,
    FIELDS,
    GET,
    LIST,
    add_params,
    add_query,
    check_id,
    check_select,
    delete_command,
    image_params,
    is_image,
    list_command,
    list_params,
    list_query,
)
from ._wire.converters import Converter
from ._wire.ids import each
from ._wire.protocol import Command
from ._wire.validate import check_int
from .exceptions import BatchError, BitrixError, MalformedResponse
from .models import FieldInfo, ImageType, ProductImage, ProductListing
from .pagination import AsyncPaginator, paginate

__all__ = [
    "ADD",
    "DELETE",
    "FIELDS",
    "GET",
    "LIST",
    "FetchedFile",
    "Images",
    "check_id",
    "check_select",
    "is_image",
    "product_failure",
]

# The most images of one product list_products holds before yielding it. A product is
# yielded whole or failed, so its pages are held until the last one; real products have tens
# of images, and a portal that keeps sending "next" must not grow memory forever.
MAX_PRODUCT_IMAGES: Final = 10_000


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

    def __init__(
        self,
        caller: Caller,
        converter: Converter,
        links: PublicLinks,
        *,
        batches_in_flight: int = 4,
    ):
        self._caller = caller
        self._converter = converter
        self._lister = _ProductLister(caller, converter, batches_in_flight)
        self._files = Files(links)

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

        def convert(items: builtins.list[object]) -> builtins.list[ProductImage]:
            return self._converter.images(items, method=LIST)

        return paginate(
            self._caller,
            LIST,
            lambda offset: list_params(product_id, names, offset),
            key="productImages",
            convert=convert,
            start=start,
        )

    def list_products(
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
        return self._lister.products(product_ids, select)

    def list_many(
        self,
        product_ids: Iterable[int] | AsyncIterable[int],
        *,
        select: Sequence[str] | None = None,
    ) -> AsyncGenerator[ProductImage, None]:
        """
        The images of many products, grouped by product in input order.

        ``list_products`` flattened: a product that could not be listed raises
        ``BatchError`` after every image before it was yielded, and nothing of it or after
        it is. Nothing is dropped silently.
        """
        return self._lister.images(product_ids, select)

    async def get(self, product_id: int, image_id: int) -> ProductImage:
        """One image of a product (catalog-product-image-get.md)."""
        envelope = await self._caller.call(GET, image_params(product_id, image_id))
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
        name, content = await _named_content(file, name)
        params = add_params(product_id, name, content, type)
        envelope = await self._caller.call(ADD, params, idempotent=False)
        return self._one(envelope.result, ADD)

    async def delete(self, product_id: int, image_id: int) -> None:
        """Remove an image from a product. Never replayed after a lost answer."""
        params = image_params(product_id, image_id)
        envelope = await self._caller.call(DELETE, params, idempotent=False)
        if envelope.result is not True:
            raise MalformedResponse(
                f"the portal answered {envelope.result!r} instead of true", method=DELETE
            )

    # --- commands, for the jobs' batches -------------------------------------------------

    def _list_command(
        self, product_id: int, *, select: Sequence[str] | None = None, start: int = 0
    ) -> Command:
        """A list command of one product's page (checked like ``list``)."""
        product_id = check_id(product_id, "product_id")
        start = check_int("start", start, minimum=0)
        return list_command(product_id, list_query(check_select(select)), start)

    def _add_command(
        self, product_id: int, name: str, content: bytes, type: ImageType = ImageType.MORE_PHOTO
    ) -> Command:
        """An add command (blocking: encodes *content*); ``ValueError`` if not an image."""
        product_id = check_id(product_id, "product_id")
        return ADD, add_query(product_id, name, content, type)

    def _delete_command(self, product_id: int, image_id: int) -> Command:
        """A delete command of one image."""
        return delete_command(product_id, image_id)

    async def _run(
        self, commands: Mapping[str, Command], *, packing: Packing | None = None
    ) -> dict[str, Outcome]:
        """Send *commands* through ``run_batch``, cut as *packing* says: an ``Outcome`` per key."""
        return await run_batch(self._caller, commands, packing=packing)

    # --- files ---------------------------------------------------------------------------

    async def download(
        self, image: ProductImage, dest: Path | str, *, via: str = "auto", durable: bool = True
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

        *via* says which link is fetched: ``"public"`` GETs ``detail_url``, a static file
        outside REST and its limits, with no credentials of any kind (an answer that is not
        the complete image is this image's failure); ``"rest"`` GETs the signed
        ``download_url`` through the request bucket, only on the portal's own origin, since
        it carries credentials; ``"auto"`` (the default) tries the public link and falls
        back to REST for this image when its answer does not count (see
        ``client.public_links``). A ``detail_url`` on a host other than the portal's is
        fetched only over https and only when every address it resolves to is global.
        A target or a folder that is a symbolic link is refused with an ``OSError``
        (``errno.ELOOP``) before anything is fetched; catch ``OSError`` with ``BitrixError``
        to skip one image and go on.
        """
        return (await self.fetch_file(image, dest, via=via, durable=durable)).path

    async def fetch_file(
        self, image: ProductImage, dest: Path | str, *, via: str = "auto", durable: bool = True
    ) -> FetchedFile:
        """``download``, telling which route the file came by (``"public"`` or ``"rest"``)."""
        return await self._files.fetch(image, dest, via=via, durable=durable)

    def _one(self, result: object, method: str) -> ProductImage:
        if not isinstance(result, Mapping) or "productImage" not in result:
            raise MalformedResponse("the answer has no 'productImage'", method=method)
        return self._converter.image(result["productImage"], method=method)


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


class _ProductLister:
    """``list_products``: products in chunks of 50, a few chunks' batches in flight."""

    def __init__(self, caller: Caller, converter: Converter, batches_in_flight: int) -> None:
        self._caller = caller
        self._converter = converter
        self._batches_in_flight = batches_in_flight

    async def products(
        self, product_ids: Iterable[int] | AsyncIterable[int], select: Sequence[str] | None
    ) -> AsyncGenerator[ProductListing, None]:
        async with contextlib.aclosing(self._chunks(product_ids, select)) as chunks:
            async for products in chunks:
                for product in products:
                    yield self._listing(product)

    async def images(
        self, product_ids: Iterable[int] | AsyncIterable[int], select: Sequence[str] | None
    ) -> AsyncGenerator[ProductImage, None]:
        """``list_many``: ``products`` flattened, without a ``ProductListing`` per product."""
        async with contextlib.aclosing(self._chunks(product_ids, select)) as chunks:
            async for products in chunks:
                for product in products:
                    error = product.error
                    images: Sequence[ProductImage] = ()
                    if error is None:
                        try:
                            images = self._images(product)
                        except MalformedResponse as malformed:
                            error = malformed  # the product fails, none of it yielded
                    if error is not None:
                        raise product_failure(ProductListing(product.product_id, (), error))
                    for image in images:
                        yield image

    async def _chunks(
        self, product_ids: Iterable[int] | AsyncIterable[int], select: Sequence[str] | None
    ) -> AsyncGenerator[list[_Product], None]:
        """The products listed, a chunk of up to 50 at a time, in input order."""
        names = check_select(select)
        source = each(product_ids, check=True)
        window: deque[asyncio.Task[list[_Product]]] = deque()
        exhausted = False

        async def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(window) < self._batches_in_flight:
                chunk: list[int] = []
                async for product_id in source:
                    chunk.append(product_id)
                    if len(chunk) == _protocol.BATCH_MAX_COMMANDS:
                        break
                else:
                    exhausted = True
                if chunk:
                    window.append(asyncio.ensure_future(self._chunk(chunk, names)))

        try:
            await fill()
            while window:
                products = await window[0]
                window.popleft()
                await fill()
                yield products
        finally:
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)
            await source.aclose()

    async def _chunk(self, product_ids: list[int], select: Sequence[str] | None) -> list[_Product]:
        """List up to 50 products through batch requests until each is complete or failed."""
        products = {f"p{i}": _Product(product_id) for i, product_id in enumerate(product_ids)}
        common = list_query(select)

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
            return list_command(product.product_id, common, following)

        outcomes = await run_batch(
            self._caller,
            {key: list_command(p.product_id, common, 0) for key, p in products.items()},
            proceed=proceed,
        )
        for key, product in products.items():
            product.error = outcomes[key].error
        return list(products.values())

    def _listing(self, product: _Product) -> ProductListing:
        """
        A listed product, every page converted at once: a malformed image fails its
        product the way a failed command does, never a product half yielded.
        """
        if product.error is not None:
            return ProductListing(product.product_id, (), product.error)
        try:
            images = tuple(self._images(product))
        except MalformedResponse as error:
            return ProductListing(product.product_id, (), error)
        return ProductListing(product.product_id, images)

    def _images(self, product: _Product) -> Sequence[ProductImage]:
        """Every page of a listed product converted (raises ``MalformedResponse``)."""
        pages, product.pages = product.pages, []
        convert = self._converter.images
        if len(pages) == 1:
            return convert(pages[0], method=LIST)
        return [image for page in pages for image in convert(page, method=LIST)]


async def _named_content(file: Path | str | bytes, name: str | None) -> tuple[str, bytes]:
    """The name and bytes an add sends: *file*'s own, or *name* for bytes."""
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
    if "/" in name or "\\" in name:
        raise ValueError("name must be a file name, not a path")
    return name, content


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path.read_bytes()
