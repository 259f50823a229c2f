"""
The ``mirror`` job: every image of many products into local folders, kept in step.

One stream, constant memory: product ids are read lazily (a list, a file, or the catalog
itself through ``catalog.product.list``) into ``client.images.list_many`` (through
``_listing``, which hands over each product complete); each image to fetch is put on a
bounded queue that a few worker tasks drain with ``client.images.download``.
``DEST/<product_id>/<file name>`` is the layout; downloads are atomic (temporary file, then
rename).

``DEST/.bitrix-images.sqlite`` (``_manifest``) lists every file this tool wrote, by image
id. "Already here" is decided by image id: a listed file of the right size is skipped
(``verify`` re-hashes it instead), a file of the same name that the manifest does not list
is adopted only when its bytes are the image's. ``prune`` removes, after a product was
listed completely, the files of its images that are gone from the portal: only files the
manifest lists, never after a failed listing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import attrs

from ._dest import prepare_dest, remove_stale, stops_the_job
from ._files import safe_name
from ._health import PortalHealth
from ._listing import Listed, products
from ._manifest import MANIFEST_NAME, Entry, Manifest, digest
from ._progress import Progress
from .exceptions import AuthError, BitrixError, MalformedResponse, RateLimited
from .models import ProductImage

if TYPE_CHECKING:
    from .client import BitrixClient

__all__ = [
    "CatalogIds",
    "MirrorResult",
    "catalog_ids",
    "file_ids",
    "mirror",
]

log = logging.getLogger("bitrix_images")

# Errors after which every further download would fail too: stop at once.
_FATAL: Final = (AuthError, RateLimited)
# Completed files recorded per manifest transaction: a crash loses at most this many
# records, and those files are adopted by hash on the next run.
_RECORD_EVERY: Final = 50
# Products in a row whose listing was malformed before the run stops: the portal answers in
# a shape we do not read, and every further product would be skipped the same way.
_MALFORMED_IN_A_ROW: Final = 3


@attrs.define
class _Counts:
    """The running counts of a mirror (the job's own, mutable)."""

    products: int = 0
    images: int = 0
    downloaded: int = 0
    skipped: int = 0
    adopted: int = 0
    removed: int = 0
    failed: int = 0
    unlisted: int = 0
    bytes: int = 0


@attrs.frozen
class MirrorResult:
    """
    What one mirror run did: the counts the command line prints.

    ``downloaded`` files were fetched; ``skipped`` were in place already (by the manifest);
    ``adopted`` were in place but unrecorded (a run stopped between a file's rename and its
    record) and are recorded now; ``removed`` files were pruned (with ``dry_run``: would
    be); ``failed`` images could not be fetched; ``unlisted`` products could not be listed
    (gone, or forbidden). ``planned`` holds the lines of a dry run.
    """

    products: int = 0
    images: int = 0
    downloaded: int = 0
    skipped: int = 0
    adopted: int = 0
    removed: int = 0
    failed: int = 0
    unlisted: int = 0
    bytes: int = 0
    seconds: float = 0.0
    retries: int = 0
    waited: float = 0.0
    dry_run: bool = False
    planned: tuple[str, ...] = ()

    def summary(self) -> str:
        """The closing line of a run."""
        fetched = "to download" if self.dry_run else "downloaded"
        line = (
            f"{self.products} products, {self.images} images "
            f"({self.downloaded} {fetched}, {self.skipped} skipped"
        )
        if self.adopted:
            line += f", {self.adopted} adopted"
        if self.failed:
            line += f", {self.failed} failed"
        if self.removed or self.dry_run:
            line += f", {self.removed} {'to remove' if self.dry_run else 'removed'}"
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


class CatalogIds:
    """
    Every product id of a catalog, ascending, one page of ``catalog.product.list`` at a time.

    An async iterator of ids; ``total`` is the catalog's size once the first page has told
    it (list-methods-pecularities.md: ``total`` in every answer), for a progress bar.
    """

    def __init__(self, client: BitrixClient, iblock_id: int) -> None:
        self.total: int | None = None
        self._client = client
        self._iblock_id = iblock_id
        self._ids: AsyncIterator[int] | None = None

    def __aiter__(self) -> CatalogIds:
        return self

    async def __anext__(self) -> int:
        if self._ids is None:
            self._ids = self._walk()
        return await self._ids.__anext__()

    async def _walk(self) -> AsyncIterator[int]:
        params = {
            "filter": {"iblockId": self._iblock_id},
            "select": ["id", "iblockId"],
            "order": {"id": "ASC"},
        }
        pages = self._client.paginate("catalog.product.list", params, key="products").pages()
        async for page in pages:
            if self.total is None:
                self.total = page.total
            for product in page.items:
                value = product.get("id") if isinstance(product, dict) else None
                # catalog.product.list sends ids as numbers or numeric strings.
                if isinstance(value, int) and not isinstance(value, bool):
                    yield value
                elif isinstance(value, str) and value.isdigit():
                    yield int(value)
                else:
                    raise ValueError(
                        f"catalog.product.list sent a product without a valid id: {value!r}"
                    )


def catalog_ids(client: BitrixClient, iblock_id: int) -> CatalogIds:
    """Every product id of a catalog (``CatalogIds``: its ``total`` once known)."""
    return CatalogIds(client, iblock_id)


class _Names:
    """Unique file names within one product's folder (case-insensitive file systems)."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def take(self, name: str) -> None:
        self._taken.add(name.casefold())

    def claim(self, image: ProductImage) -> str:
        name = safe_name(image)
        candidate = name
        while candidate.casefold() in self._taken:
            # A later image with a name already taken keeps its id in front of it.
            candidate = f"{image.id}-{candidate}"
        self._taken.add(candidate.casefold())
        return candidate


async def mirror(
    client: BitrixClient,
    product_ids: Iterable[int] | AsyncIterator[int],
    dest: Path | str,
    *,
    prune: bool = False,
    concurrency: int = 4,
    verify: bool = False,
    dry_run: bool = False,
    progress: IO[str] | None = None,
    warnings: IO[str] | None = None,
    total: int | None = None,
    on_finish: Callable[[MirrorResult], object] | None = None,
) -> MirrorResult:
    """
    Download every image of *product_ids* into ``dest/<product_id>/``; return the counts.

    Files this tool wrote are listed in ``dest/.bitrix-images.sqlite``; an image whose file
    is listed and in place is skipped (*verify*: only when its SHA-256 still matches).
    *prune* removes the files of a product's images that are gone from the portal, once
    the product was listed completely, and only files the manifest lists. *dry_run* fetches
    and removes nothing and returns the plan in ``planned``.

    *progress* is where the bar goes (``None``: no bar); it shows a percentage and an ETA
    when the number of products is known: *total*, ``len(product_ids)`` for a list, or the
    ``total`` that ``catalog_ids`` learns. *warnings* receives one line per image that
    failed (``None``: the ``bitrix_images`` logger), control characters escaped.

    One bad image never stops the run: a name the file system refuses, a download URL on
    another origin, a malformed answer, an ``OSError`` writing it are warnings naming the
    product, the image and the reason, counted as ``failed``; a product whose listing is
    malformed is skipped like one that is gone. What every further request would share
    stops the run with one error: ``AuthError``, ``RateLimited``, a full or read-only
    disk, a portal that is down (3 downloads in a row failed after their retries, with no
    answer in between), 3 malformed products in a row.

    *on_finish* receives the counts once the run ends, however it ends (done, an error, a
    cancellation such as SIGINT/SIGTERM), so that a summary can always be printed.
    ``DEST`` that is not a directory or cannot be written is an ``OSError`` saying so
    before any request; temporary files of earlier runs that were killed are removed from
    the folders this run visits.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be an int >= 1")
    for name, flag in (("prune", prune), ("verify", verify), ("dry_run", dry_run)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if not isinstance(dest, (str, Path)):
        raise TypeError(f"dest must be a Path or str, got {type(dest).__name__}")
    dest = Path(dest)
    options = _Options(prune=prune, verify=verify, dry_run=dry_run)
    if total is None and isinstance(product_ids, Sized):
        total = len(product_ids)
    job = _Job(client, dest, concurrency, options, Progress(progress, warnings, total=total))
    return await job.run(product_ids, on_finish)


@attrs.frozen
class _Options:
    prune: bool
    verify: bool
    dry_run: bool


@attrs.frozen
class _Fetch:
    """One image to download; *adopt* is an unrecorded file that may already hold it."""

    image: ProductImage
    product_id: int
    target: Path
    adopt: Path | None = None


class _Job:
    """One mirror run: a producer fed by ``_listing``, and *concurrency* download workers."""

    def __init__(
        self,
        client: BitrixClient,
        dest: Path,
        concurrency: int,
        options: _Options,
        bar: Progress,
    ) -> None:
        self.client = client
        self.dest = dest
        self.concurrency = concurrency
        self.options = options
        self.bar = bar
        self.counts = _Counts()
        self.planned: list[str] = []
        self.listed = 0  # products whose images came in (counts.products runs ahead of it)
        self.manifest: Manifest | None = None
        self.done: list[Entry] = []  # completed files not recorded yet
        self.failure: Exception | None = None  # what stopped the listing, if anything
        self.health = PortalHealth()  # downloads failing for want of a portal
        self.malformed = 0  # products in a row whose listing was malformed
        # Bounded: the listing runs at most a few images ahead of the downloads.
        self.queue: asyncio.Queue[_Fetch | None] = asyncio.Queue(concurrency * 4)

    async def run(
        self,
        product_ids: Iterable[int] | AsyncIterator[int],
        on_finish: Callable[[MirrorResult], object] | None = None,
    ) -> MirrorResult:
        client = self.client
        started = time.monotonic()
        retries = client.stats.retries
        waited = client.stats.throttle_wait + client.stats.retry_wait
        if not self.options.dry_run:
            # "not a directory" / "cannot write to DEST" before any request.
            prepare_dest(self.dest)
            self.manifest = await Manifest.open(self.dest)
        elif _is_file(self.dest / MANIFEST_NAME):
            # A dry run creates nothing; without a manifest it plans from an empty one.
            self.manifest = await Manifest.open(self.dest)
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
            try:
                if self.manifest is not None:
                    try:
                        # Even when stopped (Ctrl-C, an error): what is on disk gets recorded.
                        await self.record()
                    finally:
                        await self.manifest.close()
            finally:
                result = MirrorResult(
                    **attrs.asdict(self.counts),
                    seconds=time.monotonic() - started,
                    retries=client.stats.retries - retries,
                    waited=client.stats.throttle_wait + client.stats.retry_wait - waited,
                    dry_run=self.options.dry_run,
                    planned=tuple(self.planned),
                )
                if on_finish is not None:
                    on_finish(result)
        if self.failure is not None:
            raise self.failure
        return result

    async def counted(self, product_ids: Iterable[int] | AsyncIterator[int]) -> AsyncIterator[int]:
        if isinstance(product_ids, AsyncIterator):
            async for product_id in product_ids:
                self.counts.products += 1
                if isinstance(product_ids, CatalogIds) and product_ids.total is not None:
                    self.bar.set_total(product_ids.total)
                yield product_id
        else:
            for product_id in product_ids:
                self.counts.products += 1
                yield product_id

    async def produce(self, product_ids: Iterable[int] | AsyncIterator[int]) -> None:
        try:
            async for listed in products(self.client, self.counted(product_ids)):
                await self.take(listed)
        except Exception as error:
            # run() raises it once the queue is drained: the images listed before the failure
            # are still downloaded, and a rerun skips them.
            self.failure = error
        for _ in range(self.concurrency):
            await self.queue.put(None)

    async def take(self, listed: Listed) -> None:
        """One product from the listing: planned, or skipped with a warning."""
        self.bar.product_done()
        if listed.error is None:
            self.malformed = 0
            self.listed += 1
            await self.product(listed.product_id, listed.images)
            return
        # Gone, forbidden or malformed since it was named: a failed listing is not an empty
        # product, so nothing of it is pruned.
        self.counts.unlisted += 1
        self.bar.warn(f"product {listed.product_id} skipped: {listed.error.description}")
        if not isinstance(listed.error, MalformedResponse):
            self.malformed = 0
            return
        self.malformed += 1
        if self.malformed >= _MALFORMED_IN_A_ROW:
            # Not one product's data: the portal answers in a shape we do not read.
            raise listed.error

    async def product(self, product_id: int, images: tuple[ProductImage, ...]) -> None:
        """Plan one completely listed product: prune, skip, adopt or fetch each image."""
        counts, options = self.counts, self.options
        rows = await self.manifest.product(product_id) if self.manifest is not None else {}
        if options.prune:
            present = {image.id for image in images}
            for image_id, gone in list(rows.items()):
                if image_id not in present:
                    await self.prune(gone)
                    if not options.dry_run:
                        del rows[image_id]
        names = _Names()
        for kept in rows.values():
            names.take(kept.path.rsplit("/", 1)[-1])
        folder = self.dest / str(product_id)
        if images and not options.dry_run:
            try:
                _make_dir(folder)
                # Files a killed run (SIGKILL, a power cut) left here: theirs is gone.
                remove_stale(folder)
            except OSError as error:
                if stops_the_job(error):
                    raise
                # A file or a link where the folder should be, a name the file system
                # refuses: this product's images cannot be written, the others can.
                counts.images += len(images)
                counts.failed += len(images)
                self.bar.warn(f"product {product_id} skipped: {_reason(error)}")
                for _ in images:
                    self.bar.fail()
                return
        for image in images:
            counts.images += 1
            row = rows.get(image.id)
            path = row.under(self.dest) if row is not None else None
            if row is not None and path is not None:
                if await self.intact(row, path):
                    counts.skipped += 1
                    self.bar.skip()
                    continue
                fetch = _Fetch(image, product_id, path)
            else:
                target = folder / names.claim(image)
                if _exists(target):
                    # Not this tool's record, or a run stopped before recording it: fetch
                    # beside it, keep whichever is the image's (see work()).
                    fetch = _Fetch(image, product_id, folder / names.claim(image), target)
                else:
                    fetch = _Fetch(image, product_id, target)
            if options.dry_run:
                self.planned.append(f"download {fetch.target.relative_to(self.dest).as_posix()}")
                counts.downloaded += 1
                continue
            await self.queue.put(fetch)

    async def intact(self, row: Entry, path: Path) -> bool:
        """Whether a recorded file is still what was written (size, or *verify*: hash)."""
        if not self.options.verify:
            return _file_size(path) == row.size
        try:
            found = await asyncio.to_thread(digest, path)
        except OSError:
            return False
        if found != (row.size, row.sha256):
            self.bar.warn(f"{row.path} changed since it was written; fetching it again")
            return False
        return True

    async def prune(self, row: Entry) -> None:
        """Remove the file of an image the portal no longer has, if it is still ours."""
        path = row.under(self.dest)
        dry_run = self.options.dry_run
        if path is not None and _file_size(path) is not None:
            try:
                same = await asyncio.to_thread(digest, path) == (row.size, row.sha256)
            except OSError:
                same = False
            if not same:
                # Edited or replaced by someone since this tool wrote it: theirs now.
                self.bar.warn(f"{row.path} changed since it was written; kept, not pruned")
            else:
                self.counts.removed += 1
                if dry_run:
                    self.planned.append(f"remove {row.path}")
                else:
                    _remove(path)
        if not dry_run:
            assert self.manifest is not None  # noqa: S101 -- rows come from it
            await self.manifest.forget([row.image_id])

    async def work(self) -> None:
        counts = self.counts
        while (fetch := await self.queue.get()) is not None:
            image = fetch.image
            try:
                path = await self.client.images.download(image, fetch.target)
            except _FATAL:
                raise
            except BitrixError as error:
                down = self.health.failed(error)
                if down is not None:
                    counts.failed += 1
                    raise down from None
                self.failed(fetch, str(error))
                continue
            except (ValueError, OSError) as error:
                # Another origin, a link planted where the file goes, a name the file
                # system refuses: this image's problem. A full or read-only disk is not.
                if isinstance(error, OSError) and stops_the_job(error):
                    raise
                self.failed(fetch, _reason(error))
                continue
            self.health.succeeded()
            size, sha256 = await asyncio.to_thread(digest, path)
            if fetch.adopt is not None and await _same(fetch.adopt, size, sha256):
                # The file already there holds this image's bytes: a run stopped
                # between its rename and its record. Keep it, drop the new copy.
                _remove(path)
                path = fetch.adopt
                counts.adopted += 1
                self.bar.skip()
            else:
                counts.downloaded += 1
                counts.bytes += size
                self.bar.add_download(size)
            relative = path.relative_to(self.dest).as_posix()
            self.done.append(Entry(fetch.product_id, image.id, relative, size, sha256))
            if len(self.done) >= _RECORD_EVERY:
                await self.record()

    def failed(self, fetch: _Fetch, reason: str) -> None:
        """Count and name one image that could not be fetched; the run goes on."""
        self.counts.failed += 1
        self.bar.fail()
        self.bar.warn(
            f"product {fetch.product_id}, image {fetch.image.id} ({fetch.target.name}): {reason}"
        )

    async def record(self) -> None:
        """Write the completed files to the manifest, in one transaction."""
        done, self.done = self.done, []
        if done and self.manifest is not None:
            await self.manifest.record(done)


def _reason(error: Exception) -> str:
    """What went wrong, in words: the OS's text for an ``OSError``, without its errno."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__


async def _same(path: Path, size: int, sha256: str) -> bool:
    try:
        return await asyncio.to_thread(digest, path) == (size, sha256)
    except OSError:
        return False


# File-system metadata calls take microseconds: cheaper inline than a thread hop (as in
# images.download), kept in plain functions so that the event loop code stays readable.


def _make_dir(path: Path, *, parents: bool = False) -> None:
    path.mkdir(parents=parents, exist_ok=True)


def _is_file(path: Path) -> bool:
    return path.is_file()


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _file_size(path: Path) -> int | None:
    """The size of a regular file (not through a symlink), or ``None``."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_size if path.is_file() and not path.is_symlink() else None


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
