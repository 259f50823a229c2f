"""The download workers of a ``mirror`` run: each fetches queued images into the folder."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ..exceptions import BitrixError
from ..models import ProductImage
from .dest import reason, remove, same_file, stops_the_job
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
    *changed*: the recorded file is there but no longer what was written (fetched again).
    """

    image: ProductImage
    product_id: int
    target: Path
    adopt: Path | None = None
    changed: bool = False


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
        counts = self.counts
        while (fetch := await self.queue.get()) is not None:
            image = fetch.image
            try:
                fetched = await self.client.images.fetch_file(image, fetch.target, via=self.via)
            except FATAL:
                raise
            except BitrixError as error:
                down = self.health.failed(error)
                if down is not None:
                    counts.failed += 1
                    self.bar.fail(fetch.product_id, fetch.target.name, image.id, str(error))
                    raise down from None
                self.failed(fetch, str(error))
                continue
            except (ValueError, OSError) as error:
                # Another origin, a link planted where the file goes, a name the file
                # system refuses: this image's problem. A full or read-only disk is not.
                if isinstance(error, OSError) and stops_the_job(error):
                    raise
                self.failed(fetch, reason(error))
                continue
            self.health.succeeded()
            path = fetched.path
            self.tell_given_up()
            size, sha256 = await asyncio.to_thread(digest, path)
            if fetch.adopt is not None and await same_file(fetch.adopt, size, sha256):
                # The file already there holds this image's bytes: a run stopped
                # between its rename and its record. Keep it, drop the new copy.
                remove(path)
                path = fetch.adopt
                counts.adopted += 1
                self.bar.skip(fetch.product_id, path.name, image.id)
            else:
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
