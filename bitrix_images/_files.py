"""
A download's file: reserving its name, spooling its bytes, committing or discarding it.

The bytes of a download go to a temporary file beside the target, which is renamed into
place only when complete (and, if durable, synced), so a failure never leaves a partial
file under the final name. Nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import BinaryIO, Final

from .models import ProductImage

__all__ = ["Spool", "commit", "discard", "reserve", "safe_name"]

_INLINE_COMMIT: Final = 1024 * 1024  # bytes a non-durable download may commit on the loop
_PID: Final = os.getpid()
_PARTS: Final = itertools.count()


def safe_name(image: ProductImage) -> str:
    """The image's file name without any directory part; its id when it has none."""
    name = Path(image.name or "").name
    return name if name not in ("", ".", "..") else f"image-{image.id}"


def reserve(dest: Path, image: ProductImage) -> tuple[Path, Path]:
    """The final path for *image* under *dest*, and a temporary name beside it."""
    target = dest / safe_name(image) if dest.is_dir() else dest
    if not target.parent.is_dir():
        raise ValueError(f"no such directory: {target.parent}")
    # A fresh name per download (process id and a counter), so concurrent downloads of one
    # target never share a temporary file.
    return target, target.with_name(f".{target.name}.{_PID}-{next(_PARTS)}.part")


def discard(part: Path) -> None:
    """Remove a download's temporary file, if it is there."""
    part.unlink(missing_ok=True)


class Spool:
    """
    A download's bytes: in memory up to ``SPOOL`` bytes, then in the temporary file *part*.

    Most product images are far smaller than the limit, so their file is created, written,
    synced and renamed in one go; a large one goes to disk as it arrives.
    """

    SPOOL: Final = 4 * 1024 * 1024

    def __init__(self, part: Path) -> None:
        self.part = part
        self.chunks: list[bytes] = []
        self.size = 0
        self.spilled: BinaryIO | None = None

    def add(self, chunk: bytes) -> bool:
        """Keep *chunk*; true when the bytes in memory should move to the file."""
        self.size += len(chunk)
        self.chunks.append(chunk)
        return self.size > self.SPOOL

    def spill(self) -> None:
        """Append the bytes in memory to the temporary file (runs in a thread)."""
        if self.spilled is None:
            self.spilled = self.part.open("wb")
        self.spilled.writelines(self.chunks)
        self.chunks.clear()

    def discard(self) -> None:
        """Let go of a failed attempt's bytes; the caller removes the temporary file."""
        if self.spilled is not None:
            self.spilled.close()
            self.spilled = None
        self.chunks.clear()
        self.size = 0

    def write(self, target: Path, durable: bool) -> int:
        """Write what is left, fsync if *durable*, rename to *target* (in a thread)."""
        part = self.part
        try:
            with self.spilled if self.spilled is not None else part.open("wb") as out:
                out.writelines(self.chunks)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            part.replace(target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            self.chunks.clear()
        return self.size


async def commit(spool: Spool, target: Path, *, durable: bool) -> int:
    """Put the spooled bytes at *target*; return their size. Never leaves a thread behind."""
    if not durable and spool.size <= _INLINE_COMMIT:
        # Writing a small file to the page cache and renaming it takes about as long as
        # handing it to a thread (measured: the hop cost 0.4 ms of CPU a file, twice the
        # write), so it is done here, as aiohttp users do.
        return spool.write(target, durable)
    # An fsync waits on the disk's journal (half a millisecond and more, measured, while
    # other downloads sync), and so do the open and rename beside it: one thread does all
    # of them, so they stall neither the loop nor other downloads.
    committing = asyncio.ensure_future(asyncio.to_thread(spool.write, target, durable))
    try:
        return await asyncio.shield(committing)
    except asyncio.CancelledError:
        # The thread cannot be stopped: let it finish, so that nothing is written after the
        # caller has been told the download was cancelled.
        await asyncio.wait({committing})
        raise
