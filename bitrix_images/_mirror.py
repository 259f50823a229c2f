"""
The ``mirror`` job of the command line: every image of many products into local folders.

One stream, constant memory: product ids are read lazily (a list, a file, or the catalog
itself through ``catalog.product.list``) into ``client.images.list_many``; each image is
put on a bounded queue that a few worker tasks drain with ``client.images.download``.
``DEST/<product_id>/<file name>`` is the layout; downloads are atomic (temporary file, then
rename), so a file already in place is complete and a second run skips it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, NoReturn

import attrs
from tqdm import tqdm

from ._files import safe_name
from .exceptions import (
    AccessDenied,
    AuthError,
    BatchError,
    BitrixError,
    MalformedResponse,
    NotFound,
    RateLimited,
)
from .models import ProductImage

if TYPE_CHECKING:
    from .client import BitrixClient

__all__ = [
    "MirrorStats",
    "catalog_ids",
    "file_ids",
    "mirror",
]

# Errors after which every further download would fail too: stop at once.
_FATAL: Final = (AuthError, RateLimited)
# A product's own listing errors that another product would not share: skip it, go on.
_UNLISTABLE: Final = (NotFound, AccessDenied)


@attrs.define
class MirrorStats:
    """What one mirror run did."""

    products: int = 0
    images: int = 0
    downloaded: int = 0
    skipped: int = 0
    failed: int = 0
    unlisted: int = 0  # products that could not be listed (gone, or forbidden)
    bytes: int = 0
    seconds: float = 0.0
    retries: int = 0
    waited: float = 0.0

    def summary(self) -> str:
        """The closing line of a run."""
        line = (
            f"{self.products} products, {self.images} images "
            f"({self.downloaded} downloaded, {self.skipped} skipped"
        )
        if self.failed:
            line += f", {self.failed} failed"
        if self.unlisted:
            line += f"; {self.unlisted} products could not be listed"
        return (
            f"{line}), {self.bytes} bytes in {self.seconds:.1f} s; "
            f"{self.retries} retries, {self.waited:.1f} s waiting on rate limits "
            "(summed over concurrent requests)"
        )


def file_ids(lines: Iterable[str], source: str) -> Iterator[int]:
    """
    Product ids from the lines of a file, one per line, read lazily.

    Blank lines and ``#`` comments are skipped; anything else that is not a positive
    integer is a ``ValueError`` naming the line.
    """
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isdigit() or int(text) <= 0:
            raise ValueError(f"{source}, line {number}: not a product id: {text[:40]!r}")
        yield int(text)


async def catalog_ids(client: BitrixClient, iblock_id: int) -> AsyncIterator[int]:
    """Every product id of a catalog, ascending, one page of ``catalog.product.list`` at a time."""
    params = {
        "filter": {"iblockId": iblock_id},
        "select": ["id", "iblockId"],
        "order": {"id": "ASC"},
    }
    async for product in client.paginate("catalog.product.list", params, key="products"):
        value = product.get("id") if isinstance(product, dict) else None
        # catalog.product.list sends ids as numbers or numeric strings.
        if isinstance(value, int) and not isinstance(value, bool):
            yield value
        elif isinstance(value, str) and value.isdigit():
            yield int(value)
        else:
            raise ValueError(f"catalog.product.list sent a product without a valid id: {value!r}")


class _Names:
    """Unique file names within the product being listed (case-insensitive file systems)."""

    def __init__(self) -> None:
        self.product_id: int | None = None
        self._taken: set[str] = set()

    def start(self, product_id: int) -> bool:
        """Switch to *product_id*; ``True`` when it is a new product."""
        if product_id == self.product_id:
            return False
        self.product_id = product_id
        self._taken.clear()
        return True

    def claim(self, image: ProductImage) -> str:
        name = safe_name(image)
        candidate = name
        while candidate.casefold() in self._taken:
            # A later image with a name already taken keeps its id in front of it.
            candidate = f"{image.id}-{candidate}"
        self._taken.add(candidate.casefold())
        return candidate


class _Progress:
    """A tqdm bar on a terminal, or nothing."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._bar: tqdm[NoReturn] | None = None
        if stream is not None:
            self._bar = tqdm(file=stream, unit="img", dynamic_ncols=True, desc="mirror")

    def update(self, products: int, stats: MirrorStats) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"products={products} bytes={_human(stats.bytes)}", refresh=False
            )
            self._bar.update(1)

    def write(self, text: str, stream: IO[str]) -> None:
        if self._bar is not None:
            self._bar.write(text, file=stream)
        else:
            print(text, file=stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


async def mirror(
    client: BitrixClient,
    product_ids: Iterable[int] | AsyncIterator[int],
    dest: Path,
    *,
    concurrency: int = 4,
    progress: IO[str] | None = None,
    warnings: IO[str],
) -> MirrorStats:
    """
    Download every image of *product_ids* into ``dest/<product_id>/``.

    *progress* is where the bar goes (``None``: no bar); *warnings* receives one line per
    image that failed to download. An image that fails for good is counted and the run goes
    on, unless the failure would repeat for every image (``AuthError``, ``RateLimited``),
    which stops the run. Argument, listing and disk errors propagate.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be an int >= 1")
    job = _Job(client, dest, concurrency, _Progress(progress), warnings)
    return await job.run(product_ids)


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


class _Job:
    """One mirror run: a producer fed by list_many, and *concurrency* download workers."""

    def __init__(
        self,
        client: BitrixClient,
        dest: Path,
        concurrency: int,
        bar: _Progress,
        warnings: IO[str],
    ) -> None:
        self.client = client
        self.dest = dest
        self.concurrency = concurrency
        self.bar = bar
        self.warnings = warnings
        self.stats = MirrorStats()
        self.listed = 0  # products whose images came in (stats.products runs ahead of it)
        self.names = _Names()
        self.failure: Exception | None = None  # what stopped the listing, if anything
        # Bounded: the listing runs at most a few images ahead of the downloads.
        self.queue: asyncio.Queue[tuple[ProductImage, Path] | None] = asyncio.Queue(concurrency * 4)

    async def run(self, product_ids: Iterable[int] | AsyncIterator[int]) -> MirrorStats:
        client, stats = self.client, self.stats
        started = time.monotonic()
        retries = client.stats.retries
        waited = client.stats.throttle_wait + client.stats.retry_wait
        _make_dir(self.dest, parents=True)
        tasks = [asyncio.ensure_future(self.produce(product_ids))]
        tasks += [asyncio.ensure_future(self.work()) for _ in range(self.concurrency)]
        try:
            pending: set[asyncio.Future[None]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # re-raise the first failure; the rest are cancelled below
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.bar.close()
            stats.seconds = time.monotonic() - started
            stats.retries = client.stats.retries - retries
            stats.waited = client.stats.throttle_wait + client.stats.retry_wait - waited
        if self.failure is not None:
            raise self.failure
        return stats

    async def counted(self, product_ids: Iterable[int] | AsyncIterator[int]) -> AsyncIterator[int]:
        if isinstance(product_ids, AsyncIterator):
            async for product_id in product_ids:
                self.stats.products += 1
                yield product_id
        else:
            for product_id in product_ids:
                self.stats.products += 1
                yield product_id

    async def produce(self, product_ids: Iterable[int] | AsyncIterator[int]) -> None:
        try:
            await self.list(product_ids)
        except Exception as error:
            # run() raises it once the queue is drained: the images listed before the failure
            # are still downloaded, and a rerun skips them.
            self.failure = error
        for _ in range(self.concurrency):
            await self.queue.put(None)

    async def list(self, product_ids: Iterable[int] | AsyncIterator[int]) -> None:
        """
        List every product into the queue, skipping one that is gone or forbidden.

        A product deleted (or closed to us) between enumeration and listing makes its
        ``list_many`` command fail for good; in a catalog of 100,000 that must not end the
        run. ``list_many`` yields products in input order, so the ids handed to it and not
        yet finished are known exactly: after such a failure the job warns, counts the
        product, and starts ``list_many`` again on the ids after it.
        """
        source = self.counted(product_ids)
        unfinished: deque[int] = deque()  # handed to list_many, not yet finished
        replay: list[int] = []
        while True:
            try:
                await self.list_some(_feed(replay, source, unfinished), unfinished)
            except BatchError as error:
                first = next(iter(error.errors.values()), None)
                if error.product_id is None or not isinstance(first, _UNLISTABLE):
                    raise
                self.stats.unlisted += 1
                self.bar.write(
                    f"bitrix-images: warning: product {error.product_id} skipped: "
                    f"{first.description}",
                    self.warnings,
                )
                # The products before it are finished (they had no images to yield);
                # those after it were in flight and are listed again.
                while unfinished and unfinished.popleft() != error.product_id:
                    pass
                replay = list(unfinished)
                unfinished.clear()
                continue
            return

    async def list_some(self, product_ids: AsyncIterator[int], unfinished: deque[int]) -> None:
        names = self.names
        folder = self.dest
        async for image in self.client.images.list_many(product_ids):
            # list_many yields images grouped by product, each with its productId.
            product_id = image.product_id
            if product_id is None:
                raise MalformedResponse(f"image {image.id} came without its productId")
            # Products before this one are finished: they had no images, or all are in.
            while unfinished and unfinished[0] != product_id:
                unfinished.popleft()
            if names.start(product_id):
                self.listed += 1
                folder = self.dest / str(product_id)
                _make_dir(folder)
            target = folder / names.claim(image)
            self.stats.images += 1
            if _is_file(target):
                self.stats.skipped += 1
                self.bar.update(self.listed, self.stats)
                continue
            await self.queue.put((image, target))

    async def work(self) -> None:
        stats = self.stats
        while (item := await self.queue.get()) is not None:
            image, target = item
            try:
                path = await self.client.images.download(image, target)
            except _FATAL:
                raise
            except BitrixError as error:
                stats.failed += 1
                self.bar.write(
                    f"bitrix-images: warning: product {image.product_id}, image {image.id} "
                    f"({target.name}): {error}",
                    self.warnings,
                )
            else:
                stats.downloaded += 1
                stats.bytes += _size(path)
            self.bar.update(self.listed, stats)


# File-system metadata calls take microseconds: cheaper inline than a thread hop (as in
# images.download), kept in plain functions so that the event loop code stays readable.


def _make_dir(path: Path, *, parents: bool = False) -> None:
    path.mkdir(parents=parents, exist_ok=True)


def _is_file(path: Path) -> bool:
    return path.is_file()


def _size(path: Path) -> int:
    return path.stat().st_size
