"""
The ``upload`` job: a folder of photos onto the products, never twice.

``SRC/<product_id>/<file>``: each image file whose name the product does not have yet is
added as a ``MORE_PHOTO``. Two name prefixes mark the card's own pictures, and are not
part of the name sent: ``detail@front.jpg`` is added as the ``DETAIL_PICTURE`` named
``front.jpg``, ``preview@small.jpg`` as the ``PREVIEW_PICTURE`` ``small.jpg`` (adding one
replaces the product's previous one: portal behaviour). Files that are not JPEG, PNG, GIF,
WEBP or BMP images (the check ``client.images.add`` makes) are reported and skipped.
``prune`` deletes the product's images whose names no file in its folder has.

How it stays exact: the products are listed first (``batch`` of ``catalog.productImage.list``);
what to add or delete is decided by name against that listing. Adds go up to 50 per
``batch`` request (batch.md allows every method but ``batch``, ``download``, ``upload``),
capped by the encoded size of the request. A batch of adds is not idempotent: when its
answer is lost (``OutcomeUnknown``) or a command fails in a way that may have been applied,
its products are listed again and planned afresh, and nothing is resent before that. A
portal that refuses the packing (``ERROR_BATCH_METHOD_NOT_ALLOWED``, HTTP 413 for the body)
gets smaller batches, down to one add per request; neither refusal applied anything.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Protocol

import attrs

from . import _protocol
from ._listing import products
from ._protocol import BatchResult, Retry
from ._retry import Attempts, RetryPolicy, Verdict
from ._terminal import printable
from .exceptions import (
    AuthError,
    BitrixError,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    ServerError,
)
from .images import is_image
from .models import ImageType, ProductImage

if TYPE_CHECKING:
    from .client import BitrixClient

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DETAIL_PREFIX",
    "PREVIEW_PREFIX",
    "UploadResult",
    "upload",
]

log = logging.getLogger("bitrix_images")

ADD: Final = "catalog.productImage.add"
DELETE: Final = "catalog.productImage.delete"
DETAIL_PREFIX: Final = "detail@"
PREVIEW_PREFIX: Final = "preview@"
# A batch request's body at most (the JSON sent): well under the usual PHP post_max_size,
# and halved whenever the portal answers 413.
DEFAULT_MAX_REQUEST_BYTES: Final = 8 * 1024 * 1024
# The JSON around one command in the body: "key":"...", plus the envelope's own bytes.
_COMMAND_OVERHEAD: Final = 8
_BODY_OVERHEAD: Final = 64
_SELECT: Final = ("id", "name", "productId", "type")
# Errors after which every further request would fail too: stop at once.
_FATAL: Final = (AuthError, RateLimited)
_HEAD: Final = 16  # bytes enough for every magic number images.is_image knows


class _Wire(Protocol):
    """The client internals this job uses: one batch request, the retry driver, the clock."""

    retry: RetryPolicy

    def attempts(self, *, idempotent: bool) -> Attempts: ...

    def judge(self, attempts: Attempts, error: BitrixError, methods: Iterable[str]) -> Verdict: ...

    async def batch(
        self, commands: Mapping[str, _protocol.Command], *, halt: bool = False
    ) -> BatchResult: ...

    async def wait(self, seconds: float) -> None: ...


def _wire(client: BitrixClient) -> _Wire:
    """The one seam between this job and the client's private transport."""
    # batch() is internal (the client's Caller); this is the only line that names it.
    return client._caller


@attrs.frozen
class UploadResult:
    """
    What one upload run did: the counts the command line prints.

    ``files`` image files were found; ``added`` were sent (with ``dry_run``: would be);
    ``present`` the products had already (by name); ``removed`` images were deleted by
    ``prune``; ``failed`` could not be added or deleted (see the warnings); ``not_images``
    files were skipped; ``unlisted`` products could not be listed (gone or forbidden).
    ``requests`` is what the run sent; ``packed`` is false when the portal refused batches
    of adds and every add went alone. ``planned`` holds the lines of a dry run.
    """

    products: int = 0
    files: int = 0
    added: int = 0
    present: int = 0
    removed: int = 0
    failed: int = 0
    not_images: int = 0
    unlisted: int = 0
    requests: int = 0
    seconds: float = 0.0
    retries: int = 0
    waited: float = 0.0
    packed: bool = True
    dry_run: bool = False
    planned: tuple[str, ...] = ()

    def summary(self) -> str:
        """The closing line of a run."""
        verb = "to add" if self.dry_run else "added"
        line = f"{self.products} products, {self.files} files ({self.added} {verb}, "
        line += f"{self.present} already there"
        if self.removed or self.dry_run:
            line += f", {self.removed} {'to delete' if self.dry_run else 'deleted'}"
        if self.failed:
            line += f", {self.failed} failed"
        if self.not_images:
            line += f"; {self.not_images} not images, skipped"
        if self.unlisted:
            line += f"; {self.unlisted} products could not be listed"
        line += f") in {self.requests} requests, {self.seconds:.1f} s; {self.retries} retries"
        return line if self.packed else line + "; the portal refused batches: one add a request"


@attrs.frozen
class _File:
    """An image file to upload: the name sent, and where the card shows it."""

    product_id: int
    path: Path
    name: str
    type: ImageType

    @property
    def shown(self) -> str:
        return f"{self.product_id}/{self.path.name}"


@attrs.frozen
class _Folder:
    product_id: int
    files: tuple[_File, ...]
    names: frozenset[str]  # every image name the folder holds (prune keeps these)


@attrs.frozen
class _Op:
    """One command: an add of *file*, or a delete of *image*."""

    product_id: int
    file: _File | None = None
    image: ProductImage | None = None

    @property
    def method(self) -> str:
        return ADD if self.file is not None else DELETE

    @property
    def shown(self) -> str:
        if self.file is not None:
            return self.file.shown
        assert self.image is not None  # noqa: S101 -- one of the two is set
        return f"{self.product_id}/{self.image.name} (image {self.image.id})"


@attrs.define
class _Counts:
    products: int = 0
    files: int = 0
    added: int = 0
    present: int = 0
    removed: int = 0
    failed: int = 0
    not_images: int = 0
    unlisted: int = 0


async def upload(
    client: BitrixClient,
    src: Path | str,
    *,
    prune: bool = False,
    dry_run: bool = False,
    pack: bool = True,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    concurrency: int = 2,
    warnings: IO[str] | None = None,
) -> UploadResult:
    """
    Add the image files of ``src/<product_id>/`` that the products do not have yet (by name).

    ``detail@NAME`` and ``preview@NAME`` files become the ``DETAIL_PICTURE`` and
    ``PREVIEW_PICTURE`` named ``NAME``; every other image file a ``MORE_PHOTO``. *prune*
    deletes a product's images whose names are not in its folder. *dry_run* sends nothing
    but the listing and returns the plan in ``planned``. *pack* (the default) sends up to
    50 adds per ``batch`` request of at most *max_request_bytes*; ``pack=False`` sends one
    add per request. *concurrency* requests at once (each up to *max_request_bytes*).
    *warnings* receives one line per skipped file or failed image (``None``: the
    ``bitrix_images`` logger).

    No run creates a duplicate, even when an answer is lost or the run is killed: a product
    whose outcome is unknown is listed again before anything is resent for it.
    """
    for name, flag in (("prune", prune), ("dry_run", dry_run), ("pack", pack)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    for name, number in (("max_request_bytes", max_request_bytes), ("concurrency", concurrency)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"{name} must be an int >= 1")
    if not isinstance(src, (str, Path)):
        raise TypeError(f"src must be a Path or str, got {type(src).__name__}")
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"not a directory: {src}")
    job = _Job(client, prune, dry_run, pack, max_request_bytes, concurrency, warnings)
    return await job.run(src)


def _scan(src: Path, warn: Callable[[str], None], counts: _Counts) -> list[_Folder]:
    """The product folders of *src* and their image files (blocking: runs in a thread)."""
    folders: list[_Folder] = []
    for entry in sorted(src.iterdir(), key=lambda path: path.name):
        if entry.name.startswith("."):
            continue
        if not (entry.name.isdigit() and int(entry.name) > 0 and entry.is_dir()):
            warn(f"{entry.name}: not a product folder (named by a product id), skipped")
            continue
        product_id = int(entry.name)
        files: list[_File] = []
        names: set[str] = set()
        for path in sorted(entry.iterdir(), key=lambda path: path.name):
            found = _image_file(product_id, path, warn, counts)
            if found is None:
                continue
            if found.name in names:
                warn(f"{found.shown}: another file of this folder is named {found.name!r} too")
                counts.failed += 1
                continue
            names.add(found.name)
            files.append(found)
        counts.files += len(files)
        folders.append(_Folder(product_id, tuple(files), frozenset(names)))
    return folders


def _image_file(
    product_id: int, path: Path, warn: Callable[[str], None], counts: _Counts
) -> _File | None:
    if path.name.startswith("."):
        return None  # .DS_Store, editors' and sync tools' files
    shown = f"{product_id}/{path.name}"
    if not path.is_file():
        warn(f"{shown}: not a regular file, skipped")
        return None
    with path.open("rb") as source:
        head = source.read(_HEAD)
    if not is_image(head):
        warn(f"{shown}: not a JPEG, PNG, GIF, WEBP or BMP image, skipped")
        counts.not_images += 1
        return None
    kind = ImageType.MORE_PHOTO
    name = path.name
    for prefix, marked in (
        (DETAIL_PREFIX, ImageType.DETAIL_PICTURE),
        (PREVIEW_PREFIX, ImageType.PREVIEW_PICTURE),
    ):
        if name.lower().startswith(prefix):
            name, kind = name[len(prefix) :], marked
            break
    if not name.strip():
        warn(f"{shown}: nothing after the {path.name!r} prefix, skipped")
        counts.failed += 1
        return None
    if "\\" in name:
        # CRestUtil::saveFile keeps what follows the last slash or backslash; the image
        # would get another name, and the next run would add it again.
        warn(f"{shown}: the portal cuts names at a backslash; rename the file, skipped")
        counts.failed += 1
        return None
    return _File(product_id, path, name, kind)


def _add_query(file: _File) -> str:
    """An add command's query string (blocking: reads and encodes the file)."""
    content = file.path.read_bytes()
    if not is_image(content):
        raise ValueError(f"{file.shown} is no longer an image")
    # catalog-product-image-add.md: fileContent is [name, base64] with no data: prefix.
    return _protocol.http_build_query(
        {
            "fields": {"productId": file.product_id, "type": file.type.value},
            "fileContent": [file.name, base64.b64encode(content).decode("ascii")],
        }
    )


def _delete_query(op: _Op) -> str:
    assert op.image is not None  # noqa: S101 -- a delete names its image
    return f"productId={op.product_id}&id={op.image.id}"


class _Job:
    """One upload run: list, plan, send; list again what may have been applied."""

    def __init__(  # noqa: PLR0917 -- upload()'s options, checked there, passed on once
        self,
        client: BitrixClient,
        prune: bool,
        dry_run: bool,
        pack: bool,
        max_request_bytes: int,
        concurrency: int,
        warnings: IO[str] | None,
    ) -> None:
        self.client = client
        self.wire = _wire(client)
        self.prune = prune
        self.dry_run = dry_run
        self.pack = pack
        self.limit = max_request_bytes
        self.concurrency = concurrency
        self.warnings = warnings
        self.counts = _Counts()
        self.planned: list[str] = []
        self.uncertain: set[int] = set()  # products to list again before resending
        self.unknown: dict[int, set[_Key]] = {}  # commands whose outcome is unknown, by product
        self.given_up: set[tuple[int, str]] = set()  # (product, name) failed for good
        self.again: list[_Op] = []  # refused for load before processing: resend after a wait
        self.pause = 0.0  # the wait before resending them
        self.tries: dict[_Op, Attempts] = {}  # each refused command's own retry driver
        self.reshaped: list[_Op] = []  # refused for their packing: resend smaller, at once

    def warn(self, text: str) -> None:
        # File and image names and portal messages may hold terminal escape sequences.
        text = printable(text)
        if self.warnings is None:
            log.warning("%s", text)
        else:
            print(f"bitrix-images: warning: {text}", file=self.warnings)

    async def run(self, src: Path) -> UploadResult:
        client, counts = self.client, self.counts
        started = time.monotonic()
        requests, retries = client.stats.requests, client.stats.retries
        waited = client.stats.throttle_wait + client.stats.retry_wait
        folders = await asyncio.to_thread(_scan, src, self.warn, counts)
        counts.products = len(folders)
        by_id = {folder.product_id: folder for folder in folders}
        todo = list(by_id)
        first = True
        attempt = 0
        while todo:
            self.uncertain = set()
            await self.round(todo, by_id, first=first)
            first = False
            todo = sorted(self.uncertain)
            if not todo:
                break
            attempt += 1
            if attempt >= self.wire.retry.max_attempts:
                for product_id in todo:
                    counts.failed += 1
                    self.warn(
                        f"product {product_id}: the portal's answers kept getting lost; "
                        "nothing was resent (run again to finish it)"
                    )
                break
            # A request whose answer was lost (a timeout, say) may still be running on the
            # portal: the listing that decides what to send again waits the policy's
            # longest backoff first (30 s by default), so that it sees what that request
            # did. Lost answers are rare; a duplicate is forever.
            await self.wire.wait(self.wire.retry.max_delay)
        return UploadResult(
            **attrs.asdict(counts),
            requests=client.stats.requests - requests,
            seconds=time.monotonic() - started,
            retries=client.stats.retries - retries,
            waited=client.stats.throttle_wait + client.stats.retry_wait - waited,
            packed=self.pack,
            dry_run=self.dry_run,
            planned=tuple(self.planned),
        )

    async def round(self, todo: list[int], by_id: Mapping[int, _Folder], *, first: bool) -> None:
        """List *todo*, plan each product against its folder, and send the plan."""
        deletes: list[_Op] = []
        adds: list[_Op] = []
        async for listed in products(self.client, todo, select=_SELECT):
            if listed.error is not None:
                self.counts.unlisted += 1
                self.warn(f"product {listed.product_id} skipped: {listed.error.description}")
                continue
            folder = by_id[listed.product_id]
            have = {image.name for image in listed.images}
            self.count_unknown(listed.product_id, have, {image.id for image in listed.images})
            for file in folder.files:
                if (file.product_id, file.name) in self.given_up:
                    continue
                if file.name in have:
                    if first:
                        self.counts.present += 1
                    continue
                adds.append(_Op(file.product_id, file=file))
            if self.prune:
                deletes += [
                    _Op(listed.product_id, image=image)
                    for image in listed.images
                    # A nameless image cannot be matched with a file: it stays.
                    if image.name is not None and image.name not in folder.names
                ]
        if self.dry_run:
            for op in deletes:
                self.planned.append(f"delete {op.shown}")
            for op in adds:
                assert op.file is not None  # noqa: S101 -- an add has its file
                self.planned.append(f"add {op.shown} as {op.file.name!r}, {op.file.type.value}")
            self.counts.removed += len(deletes)
            self.counts.added += len(adds)
            return
        await self.send(DELETE, deletes)
        await self.send(ADD, adds)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, method: str, ops: list[_Op]) -> None:
        """Send *ops*, packed while the portal takes it; resend what it refused unprocessed."""
        while ops:
            self.again, self.reshaped, self.pause = [], [], 0.0
            if self.pack:
                await _bounded(self.batches(method, ops), self.concurrency)
            else:
                await _bounded((self.alone(method, op) for op in ops), self.concurrency)
            # Refused packings end: each one makes batches smaller, down to a single add,
            # which is sent alone (a 413 then fails that file). Load refusals end with
            # their commands' retry drivers.
            ops = self.reshaped + self.again
            if self.again:
                await self.wire.wait(self.pause)

    def batches(self, method: str, ops: list[_Op]) -> Iterator[Awaitable[None]]:
        """Coroutines sending *ops* in batches of at most 50 commands and the size limit."""
        chunk: list[tuple[_Op, str]] = []
        size = _BODY_OVERHEAD
        for op in ops:
            query = _delete_query(op) if op.file is None else None
            cost = len(method) + 1 + _COMMAND_OVERHEAD + (len(query) if query else _encoded(op))
            if chunk and (len(chunk) == _protocol.BATCH_MAX_COMMANDS or size + cost > self.limit):
                yield self.batch(method, chunk)
                chunk, size = [], _BODY_OVERHEAD
            chunk.append((op, query or ""))
            size += cost
        if chunk:
            yield self.batch(method, chunk)

    async def batch(self, method: str, chunk: list[tuple[_Op, str]]) -> None:
        """One ``batch`` request of *chunk*, and what each command's answer means."""
        if len(chunk) == 1 and chunk[0][0].file is not None:
            # One add: a plain call sends its bytes once (no query-string escaping).
            await self.alone(method, chunk[0][0])
            return
        commands: dict[str, _protocol.Command] = {}
        for index, (op, known) in enumerate(chunk):
            query = known
            if op.file is not None:
                try:
                    query = await asyncio.to_thread(_add_query, op.file)
                except (OSError, ValueError) as error:
                    self.fail(op, str(error))
                    continue
            commands[f"c{index}"] = (method, query)
        ops = {f"c{index}": op for index, (op, _) in enumerate(chunk)}
        if not commands:
            return
        size = _BODY_OVERHEAD + sum(
            len(key) + len(method) + 1 + len(query) + _COMMAND_OVERHEAD
            for key, (method, query) in commands.items()
            if isinstance(query, str)
        )
        try:
            result = await self.wire.batch(commands)
        except _FATAL:
            raise
        except BitrixError as error:
            if error.status == 413:
                # The body was too big for the portal (or a proxy before it): nothing was
                # applied. Smaller batches from now on, down to one add per request.
                self.limit = min(self.limit, max(size // 2, 1))
                self.reshaped += [ops[key] for key in commands]
                return
            if _refuses_packing(error):
                self.no_packing()
                self.reshaped += [ops[key] for key in commands]
                return
            # The batch may have been applied in part or whole: list before resending.
            self.unsure([ops[key] for key in commands], error)
            return
        for key in commands:
            self.answer(ops[key], result, key)

    def answer(self, op: _Op, result: BatchResult, key: str) -> None:
        error = result.errors.get(key)
        if error is None:
            if key in result.results:
                self.done(op, _stored_name(result.results[key]))
            else:
                # Neither a result nor an error: a halted or cut answer (batch.md).
                self.unsure([op], None)
            return
        if _refuses_packing(error):
            self.no_packing()
            self.reshaped.append(op)
        elif _protocol.retry_kind(error) in (Retry.BACKOFF, Retry.WAIT_RESET):
            # limits.md: refused before it ran; safe to send again, under the same rules
            # (attempts, backoff, the operating window's reset) as any call.
            attempts = self.tries.setdefault(op, self.wire.attempts(idempotent=False))
            attempts.begin()
            verdict = self.wire.judge(attempts, error, (op.method,))
            if verdict.delay is None:
                self.fail(op, f"{verdict.error.description}; run again later")
            else:
                self.again.append(op)
                self.pause = max(self.pause, verdict.delay)
        elif isinstance(error, _FATAL):
            raise error
        else:
            self.settle(op, error)

    async def alone(self, method: str, op: _Op) -> None:
        """One command in its own request (the portal refused packing, or it is too big)."""
        images = self.client.images
        stored: str | None = None
        try:
            if op.file is not None:
                file = op.file
                added = await images.add(file.product_id, file.path, name=file.name, type=file.type)
                stored = added.name
            else:
                assert op.image is not None  # noqa: S101 -- a delete names its image
                await images.delete(op.product_id, op.image.id)
        except _FATAL:
            raise
        except BitrixError as error:
            if error.status == 413:
                self.fail(op, "larger than the portal accepts in one request")
            else:
                self.settle(op, error)
        except (OSError, ValueError) as error:
            self.fail(op, str(error))
        else:
            self.done(op, stored)

    # --- outcomes ----------------------------------------------------------------------------

    def settle(self, op: _Op, error: BitrixError) -> None:
        """A command answered with an error: done, unknown, or failed."""
        if isinstance(error, (OutcomeUnknown, ServerError)) or (
            op.file is None and isinstance(error, NotFound)
        ):
            # May have been applied; for a delete, "not found" may mean it went already
            # (a new detail picture replaced it, say): the product's listing decides.
            self.unsure([op], error)
        else:
            self.fail(op, error.description)

    def unsure(self, ops: Iterable[_Op], error: BitrixError | None) -> None:
        for op in ops:
            self.uncertain.add(op.product_id)
            self.unknown.setdefault(op.product_id, set()).add(_key(op))
        why = "no answer for the command" if error is None else error.description
        log.debug("outcome unknown (%s); listing the products again", why)

    def count_unknown(self, product_id: int, names: set[str | None], ids: set[int]) -> None:
        """Count the commands of unknown outcome that the new listing shows were applied."""
        for kind, value in self.unknown.pop(product_id, ()):
            if kind == "add" and value in names:
                self.counts.added += 1
            elif kind == "delete" and value not in ids:
                self.counts.removed += 1

    def done(self, op: _Op, stored: str | None = None) -> None:
        if op.file is None:
            self.counts.removed += 1
            return
        self.counts.added += 1
        if stored is not None and stored != op.file.name:
            # Files are matched by name: one the portal renames would be added again by
            # the next run. Say so, once per file, rather than duplicate it silently later.
            self.warn(
                f"{op.shown}: the portal stored it as {stored!r}; rename the file to that "
                "name, or the next upload adds it again"
            )

    def fail(self, op: _Op, why: str) -> None:
        self.counts.failed += 1
        if op.file is not None:
            self.given_up.add((op.product_id, op.file.name))
        self.warn(f"{op.shown}: {why}")

    def no_packing(self) -> None:
        if self.pack:
            self.warn("the portal refuses adds inside batch requests; sending one per request")
        self.pack = False


_Key = tuple[str, "str | int"]


def _key(op: _Op) -> _Key:
    if op.file is not None:
        return ("add", op.file.name)
    assert op.image is not None  # noqa: S101 -- a delete names its image
    return ("delete", op.image.id)


def _encoded(op: _Op) -> int:
    """An add command's size in the body, from the file's size (base64, then escaping)."""
    assert op.file is not None  # noqa: S101 -- an add has its file
    try:
        size = op.file.path.stat().st_size
    except OSError:
        size = 0
    # base64 is 4/3; quote_plus turns its "+", "/" and "=" into three bytes (about 1 in
    # 32 characters): 1.5 is a safe bound, plus the fields and the name (escaped: x3).
    return size * 3 // 2 + 3 * len(op.file.name.encode()) + 96


def _stored_name(result: object) -> str | None:
    """The name in an add's answer (``{"productImage": {"name": ...}}``), if it is there."""
    image = result.get("productImage") if isinstance(result, Mapping) else None
    name = image.get("name") if isinstance(image, Mapping) else None
    return name if isinstance(name, str) else None


def _refuses_packing(error: BitrixError) -> bool:
    """batch.md: ERROR_BATCH_METHOD_NOT_ALLOWED, a method the portal runs only alone."""
    code = error.code
    return code is not None and _protocol.normalize_code(code) == "ERROR_BATCH_METHOD_NOT_ALLOWED"


async def _bounded(jobs: Iterable[Awaitable[None]], limit: int) -> None:
    """Run *jobs* with at most *limit* at once; the first failure cancels the rest."""
    running: set[asyncio.Future[None]] = set()
    try:
        for job in jobs:
            if len(running) >= limit:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            running.add(asyncio.ensure_future(job))
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
