"""
The download workers of a ``mirror`` run: each fetches queued images into the folder.

A file that may already hold the image is compared by hash after the download, never
trusted by name: an unrecorded file of the same name (*adopt*) is kept when its bytes are
the image's; a recorded file written for another portal before a rebind (*recheck*) is
fetched into a temporary file beside it and replaced only when the bytes differ.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .._fetch import FetchedFile
from ..exceptions import BitrixError
from ..models import ProductImage
from .dest import TEMP_SUFFIX, reason, remove, same_file, stops_the_job, temp_prefix
from .events import ADD, REPLACE
from .frame import FATAL
from .health import PortalHealth
from .manifest import Entry, digest
from .mirror_result import MirrorCounts
from .progress import Progress

if TYPE_CHECKING:
    from ..client import BitrixClient

__all__ = ["Downloads", "Fetch"]


@attrs.frozen
class Fetch:
    """
    One image to download; *adopt* is an unrecorded file that may already hold it;
    *changed*: the recorded file is there but no longer what was written (fetched again);
    *recheck*: *target* is a recorded file to compare with, and replace if it differs.
    """

    image: ProductImage
    product_id: int
    target: Path
    adopt: Path | None = None
    changed: bool = False
    recheck: bool = False


class Downloads:
    """The workers of a mirror: each fetches queued images until it takes ``None``."""

    def __init__(  # noqa: PLR0917 -- the parts of _Mirror it works with, given once
        self,
        client: BitrixClient,
        dest: Path,
        counts: MirrorCounts,
        bar: Progress,
        note: Callable[[Entry], Awaitable[None]],
        ahead: int,
        via: str,
    ) -> None:
        self.client = client
        self.via = via
        self.given_up_told = False
        self.dest = dest
        self.counts = counts
        self.bar = bar
        self.note = note
        self.health = PortalHealth()  # downloads failing for want of a portal
        self.queue: asyncio.Queue[Fetch | None] = asyncio.Queue(ahead)

    async def worker(self) -> None:
        while (fetch := await self.queue.get()) is not None:
            fetched = await self.fetch(fetch)
            if fetched is not None:
                await self.keep(fetch, fetched)

    async def fetch(self, fetch: Fetch) -> FetchedFile | None:
        """Download one image (``None``: it failed, and the warning is out)."""
        into = fetch.target
        try:
            if fetch.recheck:
                # A name of this tool's temporary pattern: a killed run's is removed later.
                into = Path(await asyncio.to_thread(_beside, fetch.target))
            return await self.client.images.fetch_file(fetch.image, into, via=self.via)
        except BaseException as error:
            if into != fetch.target:
                remove(into)
            if isinstance(error, FATAL):
                raise
            if isinstance(error, BitrixError):
                down = self.health.failed(error)
                if down is not None:
                    self.counts.failed += 1
                    image_id = fetch.image.id
                    self.bar.fail(fetch.product_id, fetch.target.name, image_id, str(error))
                    raise down from None
                self.failed(fetch, str(error))
                return None
            # Another origin, a link planted where the file goes, a name the file system
            # refuses: this image's problem. A full or read-only disk is not.
            if not isinstance(error, (ValueError, OSError)) or (
                isinstance(error, OSError) and stops_the_job(error)
            ):
                raise
            self.failed(fetch, reason(error))
            return None

    async def keep(self, fetch: Fetch, fetched: FetchedFile) -> None:
        """The image is on disk: keep the copy that holds it, count it and record it."""
        counts, image = self.counts, fetch.image
        self.health.succeeded()
        path = fetched.path
        self.tell_given_up()
        size, sha256 = await asyncio.to_thread(digest, path)
        kept = fetch.adopt or (fetch.target if fetch.recheck else None)
        if kept is not None and await same_file(kept, size, sha256):
            # The file already there holds this image's bytes (a run stopped between its
            # rename and its record, or a rebind's file that is the same): keep it.
            remove(path)
            path = kept
            if fetch.recheck:
                counts.skipped += 1
            else:
                counts.adopted += 1
            self.bar.skip(fetch.product_id, path.name, image.id)
        else:
            if fetch.recheck:
                try:
                    os.replace(path, fetch.target)
                except OSError as error:  # pragma: no cover -- a race: planned as a regular file
                    remove(path)
                    if stops_the_job(error):
                        raise
                    self.failed(fetch, reason(error))
                    return
                path = fetch.target
            counts.downloaded += 1
            counts.bytes += size
            if fetched.via == "public":
                counts.via_public += 1
            else:
                counts.via_rest += 1
            kind = REPLACE if fetch.changed else ADD
            self.bar.add_download(size, fetch.product_id, path.name, image.id, kind=kind)
        relative = path.relative_to(self.dest).as_posix()
        entry = Entry(fetch.product_id, image.id, relative, size, sha256, via=fetched.via)
        await self.note(entry)

    def tell_given_up(self) -> None:
        """Once per run: the client stopped trying public links, and why."""
        why = self.client.public_links.given_up
        if why is not None and not self.given_up_told and self.via == "auto":
            self.given_up_told = True
            self.bar.warn(f"public file links: {why}; the rest is fetched through REST")

    def failed(self, fetch: Fetch, reason: str) -> None:
        """Count and name one image that could not be fetched; the run goes on."""
        self.counts.failed += 1
        self.bar.fail(fetch.product_id, fetch.target.name, fetch.image.id, reason)
        self.bar.warn(
            f"product {fetch.product_id}, image {fetch.image.id} ({fetch.target.name}): {reason}"
        )


def _beside(target: Path) -> str:
    """A new, empty file of this tool's temporary pattern in *target*'s folder."""
    fd, path = tempfile.mkstemp(prefix=temp_prefix(), suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    return path
