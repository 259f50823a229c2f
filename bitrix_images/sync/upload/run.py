"""
The ``upload`` job: a folder of photos onto the products, never twice.

``SRC/<product_id>/<file>``: each image file whose name the product does not have yet is
added as a ``MORE_PHOTO``, or as the card's ``DETAIL_PICTURE`` / ``PREVIEW_PICTURE`` for
the ``detail@`` / ``preview@`` prefixes (``scan``; adding one replaces the product's
previous one: portal behaviour). ``prune`` deletes the product's images whose names no
file in its folder has.

How it stays exact: the products are listed first (``batch`` of ``catalog.productImage.list``);
what to add or delete is decided by name against that listing (``plan``, pure). The
commands go out through ``send``; one whose outcome is unknown (a lost answer, an error
that may have been applied) puts its product on the list of a next round, which lists it
again and plans afresh: nothing is resent before that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import attrs

from ..._wire import clock
from ..._wire.text import plural
from ...exceptions import BitrixError, TransportError
from ..deletes import DeleteBound
from ..events import REMOVE, FileEvent
from ..frame import Counts, Job, RunTotals
from ..listing import products
from ..progress import Progress
from .guard import Guard
from .plan import Key, Op, applied, plan_product
from .scan import MAX_FILE_BYTES, Folder, scan
from .send import Sender

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_SETTLE_AFTER",
    "UploadCounts",
    "UploadResult",
    "upload",
]

log = logging.getLogger("bitrix_images")

# A batch request's body at most (the JSON sent): well under the usual PHP post_max_size,
# and halved whenever the portal answers 413.
DEFAULT_MAX_REQUEST_BYTES: Final = 8 * 1024 * 1024
_SELECT: Final = ("id", "name", "productId", "type")
# How long an add sent by a run that was killed may still be running on the portal: the
# cloud portals' longest request (limits.md: 60 s). The next run lists its product only then.
DEFAULT_SETTLE_AFTER: Final = 60.0
# How long a second upload of the same folder waits for the first before it gives up.
DEFAULT_LOCK_WAIT: Final = 30.0


@attrs.define(slots=False)
class UploadCounts(Counts):
    """The running counts of an upload; ``UploadResult`` inherits them."""

    files: int = 0
    added: int = 0
    present: int = 0
    not_images: int = 0
    held_back: int = 0  # deletes prune decided but did not make (max_delete, a listing failed)


@attrs.frozen
class UploadResult(RunTotals, UploadCounts):
    """
    What one upload run did: the counts the command line prints.

    ``files`` image files were found; ``added`` were sent (with ``dry_run``: would be);
    ``present`` the products had already (by name); ``removed`` images were deleted by
    ``prune``; ``failed`` could not be added or deleted (see the warnings); ``not_images``
    files were skipped; ``unlisted`` products could not be listed (gone or forbidden).
    ``requests`` is what the run sent; ``packed`` is false when the portal refused batches
    of adds and every add went alone. ``planned`` holds the lines of a dry run; the rest
    is ``RunTotals``.
    """

    packed: bool = True

    def summary(self) -> str:
        """The closing line of a run."""
        verb = "to add" if self.dry_run else "added"
        line = f"{plural(self.products, 'product')}, {plural(self.files, 'file')} "
        line += f"({self.added} {verb}, "
        line += f"{self.present} already there"
        if self.removed or self.dry_run:
            line += f", {self.removed} {'to delete' if self.dry_run else 'deleted'}"
        if self.failed:
            line += f", {self.failed} failed"
        if self.held_back:
            line += f", {plural(self.held_back, 'delete')} held back"
        if self.not_images:
            line += f"; {self.not_images} not images, skipped"
        if self.unlisted:
            line += f"; {plural(self.unlisted, 'product')} could not be listed"
        line += f") in {self.requests} requests, {self.seconds:.1f} s; {self.retries} retries"
        return line if self.packed else line + "; the portal refused batches: one add a request"


async def upload(
    client: BitrixClient,
    src: Path | str,
    *,
    prune: bool = False,
    dry_run: bool = False,
    pack: bool = True,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    concurrency: int = 2,
    progress: IO[str] | None = None,
    warnings: IO[str] | None = None,
    on_finish: Callable[[UploadResult], object] | None = None,
    on_event: Callable[[FileEvent], object] | None = None,
    max_delete: int = 100,
    max_file_bytes: int = MAX_FILE_BYTES,
    settle_after: float = DEFAULT_SETTLE_AFTER,
    lock_wait: float = DEFAULT_LOCK_WAIT,
) -> UploadResult:
    """
    Add the image files of ``src/<product_id>/`` that the products do not have yet (by name).

    ``detail@NAME`` and ``preview@NAME`` files become the ``DETAIL_PICTURE`` and
    ``PREVIEW_PICTURE`` named ``NAME``; every other image file a ``MORE_PHOTO``. *prune*
    deletes a product's images whose names are not in its folder. *dry_run* sends nothing
    but the listing and returns the plan in ``planned``. *pack* (the default) sends up to
    50 adds per ``batch`` request of at most *max_request_bytes*; ``pack=False`` sends one
    add per request. *concurrency* requests at once (each up to *max_request_bytes*).
    *progress* is where the bar goes (``None``: no bar), counting products. *warnings*
    receives one line per skipped file or failed image (``None``: the ``bitrix_images``
    logger). *on_finish* receives the counts once the run ends, however it ends (done, an
    error, a cancellation such as SIGINT/SIGTERM), so that a summary can always be printed;
    a run stopped before its first request (the folder's lock held past *lock_wait*, two
    ``detail@`` files of one product) never started: it raises, and *on_finish* is not
    called, as for ``mirror``. *on_event* receives a ``FileEvent`` per file as it is
    handled (``+`` added, ``~`` a card picture replaced, ``-`` deleted, ``=`` there
    already, ``!`` failed; with *dry_run*: planned).

    No run creates a duplicate, even when an answer is lost or the run is killed: a product
    whose outcome is unknown is listed again before anything is resent for it, and every add
    is journalled in ``src`` before it is sent (``sync.upload.journal``): the next run waits
    until *settle_after* seconds after the send of each add a killed run left unsettled, and
    lists its product again, before it plans anything. One upload of ``src`` runs at a time:
    a second waits up to *lock_wait* seconds, then fails with ``LockedError`` naming the
    holder.
    """
    for name, flag in (("prune", prune), ("dry_run", dry_run), ("pack", pack)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    for name, number in (("max_request_bytes", max_request_bytes), ("concurrency", concurrency)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"{name} must be an int >= 1")
    for name, number in (("max_delete", max_delete), ("max_file_bytes", max_file_bytes)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError(f"{name} must be an int >= 0")
    for name, seconds in (("settle_after", settle_after), ("lock_wait", lock_wait)):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"{name} must be a number of seconds >= 0")
    if not isinstance(src, (str, Path)):
        raise TypeError(f"src must be a Path or str, got {type(src).__name__}")
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"not a directory: {src}")
    bar = Progress(progress, warnings, desc="upload", verb="added", on_event=on_event)
    sending: dict[str, Any] = {
        "pack": pack,
        "max_request_bytes": max_request_bytes,
        "concurrency": concurrency,
        "max_file_bytes": max_file_bytes,
    }
    job = _Upload(
        client,
        src,
        bar,
        sending,
        prune=prune,
        dry_run=dry_run,
        settle_after=float(settle_after),
        lock_wait=float(lock_wait),
    )
    job.deletes, job.max_file_bytes = DeleteBound(max_delete), max_file_bytes
    return await job.run(on_finish)


class _Upload(Job[UploadCounts, UploadResult]):
    """One upload run: scan, then rounds of list, plan, send, until nothing is unsure."""

    def __init__(
        self,
        client: BitrixClient,
        src: Path,
        bar: Progress,
        sending: Mapping[str, Any],
        *,
        prune: bool,
        dry_run: bool,
        settle_after: float,
        lock_wait: float,
    ) -> None:
        super().__init__(client, UploadCounts(), UploadResult, bar, dry_run=dry_run)
        self.sender = Sender(client.images, self, **sending)
        self.src = src
        self.prune = prune
        self.uncertain: set[int] = set()  # products to list again before resending
        self.unknown: dict[int, set[Key]] = {}  # commands whose outcome is unknown, by product
        self.given_up: set[tuple[int, str]] = set()  # (product, name) failed for good
        self.folders: dict[int, Folder] = {}  # by product id, once scanned
        self.deletes = DeleteBound(100)  # the run's deletes, bounded by max_delete
        self.max_file_bytes = MAX_FILE_BYTES
        self.guard = Guard(client, src, self.warn, settle_after=settle_after, lock_wait=lock_wait)

    def result_fields(self) -> dict[str, Any]:
        return {"packed": self.sender.pack}

    def warn(self, text: str) -> None:
        # File and image names and portal messages may hold terminal escape sequences:
        # the reporter makes them printable.
        self.bar.warn(text)

    async def run(self, on_finish: Callable[[UploadResult], object] | None = None) -> UploadResult:
        try:
            return await super().run(on_finish)
        finally:
            self.guard.close()
            await self.guard.release_products()

    def sending(self, ops: Iterable[Op]) -> None:
        self.guard.sending(ops)

    async def prepare(self) -> None:
        try:
            await self.guard.take_folder()
        except BaseException:
            self.guard.close()
            raise
        counts = self.counts
        scanned = await asyncio.to_thread(
            scan, self.src, self.warn, max_file_bytes=self.max_file_bytes
        )
        counts.files += scanned.files
        counts.not_images += scanned.not_images
        counts.failed += scanned.failed
        for product_id, name, why in scanned.failures:
            self.bar.fail(product_id, name, None, why)
        counts.products = len(scanned.folders)
        self.bar.set_total(counts.products)
        self.folders = {folder.product_id: folder for folder in scanned.folders}
        if not self.dry_run:
            await self.guard.hold_products(self.folders)

    async def body(self) -> None:
        await self.guard.settle(self.folders, dry_run=self.dry_run)
        counts, by_id = self.counts, self.folders
        todo = list(by_id)
        first = True
        attempt = 0
        retry = self.client.retry_policy
        while todo:
            self.uncertain = set()
            await self.round(todo, by_id, first=first)
            first = False
            todo = sorted(self.uncertain)
            if not todo:
                break
            attempt += 1
            if attempt >= retry.max_attempts:
                for product_id in todo:
                    counts.failed += 1
                    why = "the portal's answers kept getting lost; nothing was resent"
                    self.bar.fail(product_id, None, None, why)
                    self.warn(f"product {product_id}: {why} (run again to finish it)")
                break
            # A request whose answer was lost (a timeout, say) may still be running on the
            # portal: the listing that decides what to send again waits the policy's
            # longest backoff first (30 s by default), and for an add until its send plus
            # settle_after (the portal's longest request), as the next run would, so that
            # it sees what that request did. Lost answers are rare; a duplicate is forever.
            await clock.current().sleep(max(retry.max_delay, self.guard.unsettled()))

    async def round(self, todo: list[int], by_id: Mapping[int, Folder], *, first: bool) -> None:
        """List *todo*, plan each product against its folder, and send the plan."""
        deletes: list[Op] = []
        adds: list[Op] = []
        unlisted = 0
        async for listed in products(self.client, todo, select=_SELECT):
            if first:
                self.bar.product_done()
            if listed.error is not None:
                unlisted += 1
                self.counts.unlisted += 1
                self.warn(f"product {listed.product_id} skipped: {listed.error.description}")
                self.bar.unlisted(listed.product_id, listed.error.description)
                continue
            if not self.dry_run:
                self.guard.listed(listed.product_id)
            unknown = self.unknown.pop(listed.product_id, ())
            for event in applied(listed.product_id, unknown, listed.images):
                if event.kind == REMOVE:
                    self.counts.removed += 1
                else:
                    self.counts.added += 1
                self.bar.tell(event)
            plan = plan_product(
                by_id[listed.product_id], listed.images, prune=self.prune, given_up=self.given_up
            )
            if first:
                self.counts.present += plan.present
                for file in plan.kept:
                    self.bar.skip(file.product_id, file.path.name)
            adds += plan.adds
            deletes += plan.deletes
        deletes = self.bounded(deletes, unlisted)
        if self.dry_run:
            for op in (*deletes, *adds):
                self.bar.tell(op.event())
            self.counts.removed += len(deletes)
            self.counts.added += len(adds)
            return
        await self.sender.send(deletes)
        await self.sender.send(adds)
        self.guard.forget_settled()

    def bounded(self, deletes: list[Op], unlisted: int) -> list[Op]:
        """
        The deletes prune may make, decided after every listing of the round: none when a
        listing failed, none when there are more than ``max_delete`` (the run says why).
        """
        why = self.deletes.why_not(len(deletes), unlisted=unlisted)
        if why is None:
            return deletes
        self.counts.held_back += len(deletes)
        self.warn(f"prune would delete {len(deletes)} images; nothing deleted: {why}")
        return []

    # --- outcomes, as the sender reports them ------------------------------------------------

    def unsure(self, ops: Iterable[Op], error: BitrixError | None) -> None:
        ops = list(ops)
        for op in ops:
            self.uncertain.add(op.product_id)
            self.unknown.setdefault(op.product_id, set()).add(op.key)
        if error is None or isinstance(error, TransportError):
            self.guard.answer_lost(ops)
        why = "no answer for the command" if error is None else error.description
        log.debug("outcome unknown (%s); listing the products again", why)

    def done(self, op: Op, stored: str | None = None) -> None:
        self.guard.known(op)
        event = op.event()
        if op.file is None:
            self.counts.removed += 1
            self.bar.tell(event)
            return
        self.counts.added += 1
        self.bar.add_download(
            op.file.size(),
            op.product_id,
            event.name,
            kind=event.kind,
            replaces=event.replaces,
            replaces_id=event.replaces_id,
        )
        if stored is not None and stored != op.file.name:
            # Files are matched by name: one the portal renames would be added again by
            # the next run. Say so, once per file, rather than duplicate it silently later.
            self.warn(
                f"{op.shown}: the portal stored it as {stored!r}; rename the file to that "
                "name, or the next upload adds it again"
            )

    def fail(self, op: Op, why: str) -> None:
        self.guard.known(op)
        self.counts.failed += 1
        self.bar.fail(op.product_id, op.name, None if op.image is None else op.image.id, why)
        if op.file is not None:
            self.given_up.add((op.product_id, op.file.name))
        self.warn(f"{op.shown}: {why}")
