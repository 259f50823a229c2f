"""
The ``mirror`` job: every image of many products into local folders, kept in step.

One stream, constant memory: product ids are read lazily (a list, a file, or the catalog
itself through ``catalog.product.list``) into ``client.images.list_products`` (through
``listing``, which hands over each product complete); each image to fetch is put on a
bounded queue that a few worker tasks drain with ``client.images.download``.
``DEST/<product_id>/<file name>`` is the layout; downloads are atomic (temporary file, then
rename).

``DEST/.bitrix-images.sqlite`` (``manifest``) lists every file this tool wrote, by image
id, and is bound to its portal (``binding``). "Already here" is decided by image id: a
listed file of the right size is skipped (``verify`` re-hashes it instead), a file of the
same name that the manifest does not list is adopted only when its bytes are the image's.
Existing files are read only when they are regular files (a FIFO is reported, never
opened). ``prune`` collects the files of images gone from the portal over the whole run
and removes them after every listing succeeded, at most ``max_delete``: only files the
manifest lists, still holding what was written, never through a folder that is a link.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sized
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import attrs

from .._calls.links import check_via
from ..exceptions import MalformedResponse
from ..models import ProductImage
from .binding import Binding, judge, portal_of
from .deletes import DeleteBound
from .dest import (
    Names,
    check_dest,
    exists,
    file_size,
    kind_of,
    make_dir,
    prepare_dest,
    reason,
    remove_ours,
    remove_stale,
    stops_the_job,
)
from .downloads import Downloads, Fetch
from .events import ADD, REPLACE, FileEvent
from .frame import Job, run_bounded
from .ids import Ids, counted
from .listing import Listed, products
from .manifest import MANIFEST_NAME, Entry, Manifest, digest
from .mirror_result import MirrorCounts, MirrorResult
from .progress import Progress

if TYPE_CHECKING:
    from ..client import BitrixClient

__all__ = ["MirrorCounts", "MirrorResult", "mirror"]

# Completed files recorded per manifest transaction: a crash loses at most this many
# records, and those files are adopted by hash on the next run.
_RECORD_EVERY: Final = 50
# Products in a row whose listing was malformed before the run stops: the portal answers in
# a shape we do not read, and every further product would be skipped the same way.
_MALFORMED_IN_A_ROW: Final = 3


async def mirror(
    client: BitrixClient,
    product_ids: Ids,
    dest: Path | str,
    *,
    prune: bool = False,
    concurrency: int = 4,
    via: str = "auto",
    verify: bool = False,
    dry_run: bool = False,
    max_delete: int = 100,
    rebind: bool = False,
    progress: IO[str] | None = None,
    warnings: IO[str] | None = None,
    total: int | None = None,
    on_finish: Callable[[MirrorResult], object] | None = None,
    on_event: Callable[[FileEvent], object] | None = None,
) -> MirrorResult:
    """
    Download every image of *product_ids* into ``dest/<product_id>/``; return the counts.

    Files this tool wrote are listed in ``dest/.bitrix-images.sqlite``; an image whose file
    is listed and in place is skipped (*verify*: only when its SHA-256 still matches).
    *prune* removes the files of images that are gone from the portal: only files the
    manifest lists and that still hold what this tool wrote, only after every product was
    listed (a product that could not be listed holds every removal back), at most
    *max_delete* in a run (beyond it none is made; the run says why and counts them in
    ``held_back``). *dry_run* fetches and removes nothing and returns the plan in
    ``planned``; it checks ``dest`` as a real run does.

    The manifest is bound to its portal (``binding``): a run against another one raises
    ``PortalMismatch`` naming both hosts before any download; *rebind* binds ``dest`` to
    this portal instead and fetches every recorded file again, kept when its bytes are the
    same, replaced when not. A renamed portal (its ``member_id`` known) rebinds itself.

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

    *via* says how files are fetched (``client.images.download``): ``"auto"`` (the
    default) through their public links, falling back to REST per image, ``"public"``
    only through them, ``"rest"`` only through the signed REST links. The summary counts
    the files by route and the fallbacks by reason, not a warning per image; a client that
    gives up public links (``auto``) says so once.

    *on_finish* receives the counts once the run ends, however it ends (done, an error, a
    cancellation such as SIGINT/SIGTERM), so that a summary can always be printed.
    *on_event* receives a ``FileEvent`` per file as it is handled (``+`` downloaded, ``~``
    fetched again, ``-`` pruned, ``=`` in place, ``!`` failed; with *dry_run*: planned).
    ``DEST`` that is not a directory or cannot be written, or a manifest that is not a
    regular file (a link), is an ``OSError`` saying so before any request (no summary:
    the run never started); an existing file that is not a regular file (a FIFO) where an
    image goes is a warning, counted ``failed``, and never opened; temporary files of
    earlier runs that were killed are removed from the folders this run visits.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be an int >= 1")
    flags = (("prune", prune), ("verify", verify), ("dry_run", dry_run), ("rebind", rebind))
    for name, flag in flags:
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if isinstance(max_delete, bool) or not isinstance(max_delete, int) or max_delete < 0:
        raise ValueError("max_delete must be an int >= 0")
    if not isinstance(dest, (str, Path)):
        raise TypeError(f"dest must be a Path or str, got {type(dest).__name__}")
    dest = Path(dest)
    options = _Options(
        prune=prune,
        verify=verify,
        dry_run=dry_run,
        via=check_via(via),
        max_delete=max_delete,
        rebind=rebind,
    )
    if total is None and isinstance(product_ids, Sized):
        total = len(product_ids)
    bar = Progress(progress, warnings, total=total, per_image=True, on_event=on_event)
    return await _Mirror(client, product_ids, dest, concurrency, options, bar).run(on_finish)


@attrs.frozen
class _Options:
    prune: bool
    verify: bool
    dry_run: bool
    via: str
    max_delete: int = 100
    rebind: bool = False


class _Mirror(Job[MirrorCounts, MirrorResult]):
    """One mirror run: a producer fed by ``listing``, and *concurrency* download workers."""

    def __init__(  # noqa: PLR0917 -- mirror()'s arguments, checked there, passed on once
        self,
        client: BitrixClient,
        product_ids: Ids,
        dest: Path,
        concurrency: int,
        options: _Options,
        bar: Progress,
    ) -> None:
        super().__init__(client, MirrorCounts(), MirrorResult, bar, dry_run=options.dry_run)
        self.product_ids = product_ids
        self.dest = dest
        self.concurrency = concurrency
        self.options = options
        self.manifest: Manifest | None = None
        self.binding: Binding | None = None  # the portal the manifest is bound to
        self.done: list[Entry] = []  # completed files not recorded yet
        self.gone: list[Entry] = []  # rows of images gone from the portal (prune)
        self.deletes = DeleteBound(options.max_delete)
        self.failure: Exception | None = None  # what stopped the listing, if anything
        self.malformed = 0  # products in a row whose listing was malformed
        # Bounded: the listing runs at most a few images ahead of the downloads.
        self.downloads = Downloads(
            client, dest, self.counts, bar, self.note, concurrency * 4, options.via
        )
        self.queue = self.downloads.queue
        # The client's fallbacks before the run: the run reports its own.
        self.fallbacks_before = dict(client.public_links.fallbacks)

    def result_fields(self) -> dict[str, Any]:
        links = self.client.public_links
        before = self.fallbacks_before
        fallbacks = [
            (reason, count - before.get(reason, 0))
            for reason, count in sorted(links.fallbacks.items())
            if count > before.get(reason, 0)
        ]
        return {"fallbacks": tuple(fallbacks), "public_given_up": links.given_up}

    async def prepare(self) -> None:
        # "not a directory" / "cannot write to DEST" / a manifest that is a link, before
        # any request; a dry run makes the same checks and creates nothing.
        if self.options.dry_run:
            check_dest(self.dest)
            if not exists(self.dest / MANIFEST_NAME):
                return  # it plans from an empty manifest
        else:
            prepare_dest(self.dest)
        manifest = await Manifest.open(self.dest)
        try:
            await self.bind(manifest)
        except BaseException:
            await manifest.close()
            raise
        self.manifest = manifest

    async def bind(self, manifest: Manifest) -> None:
        """Check the manifest's portal against the client's (``binding``), before any request."""
        bound = await manifest.binding()
        binding, notice = judge(
            bound, portal_of(self.client), rebind=self.options.rebind, where=str(self.dest)
        )
        if notice is not None:
            self.bar.warn(notice)
        if binding != bound and not self.options.dry_run:
            await manifest.bind(binding)
        manifest.generation = binding.generation
        self.binding = binding

    async def body(self) -> None:
        workers = (self.downloads.worker() for _ in range(self.concurrency))
        tasks = [self.produce(), *workers]
        try:
            await run_bounded(tasks, len(tasks))
            if self.options.prune:
                await self.prune()
        finally:
            if self.manifest is not None:
                try:
                    # Even when stopped (Ctrl-C, an error): what is on disk gets recorded.
                    await self.record()
                    await self.learn_member()
                finally:
                    await self.manifest.close()
        if self.failure is not None:
            raise self.failure

    async def learn_member(self) -> None:
        """The ``member_id`` an OAuth refresh told during the run goes into the binding."""
        member = portal_of(self.client).member_id
        bound = self.binding
        if self.options.dry_run or bound is None or bound.member_id is not None or not member:
            return
        assert self.manifest is not None  # noqa: S101 -- a binding comes from it
        self.binding = attrs.evolve(bound, member_id=member)
        await self.manifest.bind(self.binding)

    def seen(self, total: int | None) -> None:
        """One more product id read; *total* once the catalog has told it."""
        self.counts.products += 1
        if total is not None:
            self.bar.set_total(total)

    async def produce(self) -> None:
        try:
            async for listed in products(self.client, counted(self.product_ids, self.seen)):
                await self.receive(listed)
        except Exception as error:
            # body() raises it once the queue is drained: the images listed before the
            # failure are still downloaded, and a rerun skips them.
            self.failure = error
        self.bar.listing_done()
        for _ in range(self.concurrency):
            await self.queue.put(None)

    async def receive(self, listed: Listed) -> None:
        """One product from the listing: planned, or skipped with a warning."""
        self.bar.product_done()
        if listed.error is None:
            self.malformed = 0
            await self.product(listed.product_id, listed.images)
            return
        # Gone, forbidden or malformed since it was named: a failed listing is not an empty
        # product, so nothing of it is pruned.
        self.counts.unlisted += 1
        self.bar.warn(f"product {listed.product_id} skipped: {listed.error.description}")
        self.bar.unlisted(listed.product_id, listed.error.description)
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
            # Removed after every listing (prune()); their names stay taken until then.
            present = {image.id for image in images}
            self.gone += [row for image_id, row in rows.items() if image_id not in present]
        names = Names()
        for kept in rows.values():
            names.keep(kept.path.rsplit("/", 1)[-1])
        folder = self.dest / str(product_id)
        self.bar.images_listed(len(images))
        if images and not options.dry_run:
            try:
                make_dir(folder)
                # Files a killed run (SIGKILL, a power cut) left here: theirs is gone.
                remove_stale(folder)
            except OSError as error:
                if stops_the_job(error):
                    raise
                # A file or a link where the folder should be, a name the file system
                # refuses: this product's images cannot be written, the others can.
                counts.images += len(images)
                counts.failed += len(images)
                why = reason(error)
                self.bar.warn(f"product {product_id} skipped: {why}")
                for image in images:
                    self.bar.fail(product_id, image.name, image.id, why)
                return
        for image in images:
            counts.images += 1
            row = rows.get(image.id)
            path = row.under(self.dest) if row is not None else None
            if row is not None and path is not None:
                odd = kind_of(path)
                if odd is not None:
                    # A FIFO, a device, a link or a folder where the file was: never
                    # opened, never replaced; the user sees it and the run goes on.
                    counts.failed += 1
                    why = f"{odd}, not a regular file; left alone"
                    self.bar.fail(product_id, path.name, image.id, why)
                    self.bar.warn(f"{row.path} is {why}")
                    continue
                trusted = self.manifest is not None and row.generation == self.manifest.generation
                if trusted and await self.intact(row, path):
                    counts.skipped += 1
                    self.bar.skip(product_id, path.name, image.id)
                    continue
                # Written for the portal before a rebind: fetched again and compared.
                recheck = not trusted and file_size(path) is not None
                fetch = Fetch(image, product_id, path, changed=exists(path), recheck=recheck)
            else:
                fetch = unrecorded(image, product_id, folder, names)
            if options.dry_run:
                kind = REPLACE if fetch.changed else ADD
                self.bar.tell(FileEvent(kind, product_id, fetch.target.name, image.id))
                counts.downloaded += 1
                continue
            await self.queue.put(fetch)

    async def intact(self, row: Entry, path: Path) -> bool:
        """Whether a recorded file is still what was written (size, or *verify*: hash)."""
        if not self.options.verify:
            return file_size(path) == row.size
        try:
            found = await asyncio.to_thread(digest, path)
        except OSError:
            return False
        if found != (row.size, row.sha256):
            self.bar.warn(f"{row.path} changed since it was written; fetching it again")
            return False
        return True

    async def prune(self) -> None:
        """
        After every listing: remove the files of the images gone from the portal that are
        still this tool's, unless a listing failed or they are more than ``max_delete``.
        """
        counts, dry_run = self.counts, self.options.dry_run
        ours: list[Entry] = []
        forget: list[int] = []
        for row in self.gone:
            why = await self.removal(row, dry_run=True)
            if why is None:
                ours.append(row)
                continue
            if why != "gone":
                # Edited, replaced or moved since this tool wrote it: theirs now.
                self.bar.warn(f"{row.path} {why}; kept, not pruned")
            forget.append(row.image_id)
        why_not = self.deletes.why_not(len(ours), unlisted=counts.unlisted)
        if ours and self.failure is not None:
            why_not = "the listing did not finish"
        if why_not is not None:
            counts.held_back += len(ours)
            self.bar.warn(f"prune would remove {len(ours)} files; nothing removed: {why_not}")
            ours = []
        for row in ours:
            why = None if dry_run else await self.removal(row, dry_run=False)
            if why is None:
                counts.removed += 1
                self.bar.removed(row.product_id, row.path.rsplit("/", 1)[-1], row.image_id)
            elif why != "gone":  # pragma: no cover -- a race: changed since the check above
                self.bar.warn(f"{row.path} {why}; kept, not pruned")
            forget.append(row.image_id)
        if not dry_run and self.manifest is not None:
            await self.manifest.forget(forget)

    async def removal(self, row: Entry, *, dry_run: bool) -> str | None:
        """Remove *row*'s file if it is still ours (``None``), or say why not."""
        path = row.under(self.dest)
        if path is None:
            return "gone"  # a row that names no file of its folder: nothing to remove
        return await asyncio.to_thread(
            remove_ours, path.parent, path.name, row.size, row.sha256, dry_run=dry_run
        )

    async def note(self, entry: Entry) -> None:
        """A file is in place: record it with the next batch of records."""
        self.done.append(entry)
        if len(self.done) >= _RECORD_EVERY:
            await self.record()

    async def record(self) -> None:
        """Write the completed files to the manifest, in one transaction."""
        done, self.done = self.done, []
        if done and self.manifest is not None:
            await self.manifest.record(done)


def unrecorded(image: ProductImage, product_id: int, folder: Path, names: Names) -> Fetch:
    """The fetch of an image the manifest does not list (a new one, most often)."""
    target = folder / names.claim(image)
    if not exists(target):
        return Fetch(image, product_id, target)
    # Not this tool's record, or a run stopped before recording it: fetch beside it, under
    # a name nothing has, and keep whichever is the image's (see Downloads).
    return Fetch(image, product_id, names.free(image, folder), target)
