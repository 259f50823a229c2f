"""
A download's file: reserving its name, spooling its bytes, committing or discarding it.

The bytes of a download go to a temporary file beside the target, which is renamed into
place only when complete (and, if durable, synced), so a failure never leaves a partial
file under the final name. Nothing here touches the network.

The temporary file is made by ``tempfile.mkstemp`` (``O_EXCL``, mode 0600, an unpredictable
short name) and reopened with ``O_NOFOLLOW``; a final path or a folder that is a symbolic
link is refused with an ``OSError`` (``errno.ELOOP``) naming the path, so a download never
writes anywhere but where it was asked to.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import BinaryIO, Final

from .models import ProductImage

__all__ = ["Spool", "commit", "discard", "reserve", "safe_name"]

_INLINE_COMMIT: Final = 1024 * 1024  # bytes a non-durable download may commit on the loop
# NAME_MAX is 255 bytes on every common file system; a name we make keeps room under it for
# the "<image id>-" a caller may put in front to tell two files of one name apart.
_NAME_BYTES: Final = 255 - 40
# An extension longer than this is not one worth keeping whole ("x.<200 bytes>").
_SUFFIX_BYTES: Final = 16
# The process umask, read once (reading it means setting it, which is not thread-safe): a
# finished download gets the mode a plain open() would have given it, not mkstemp's 0600.
_UMASK: Final = os.umask(0o022)
os.umask(_UMASK)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)  # not on Windows, where links are rare
_FCHMOD: Final = getattr(os, "fchmod", None)  # not on Windows before Python 3.13


def safe_name(image: ProductImage) -> str:
    """
    A file name for *image* that is safe on any common file system.

    No directory part, no path separator, NUL or control character; at most ``_NAME_BYTES``
    bytes of UTF-8, cut at a character boundary and keeping the extension. A name that had
    to be cut gets the image id before its extension, so two long names stay apart; an
    image without a usable name is ``image-<id>``.
    """
    raw = (image.name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in raw if unicodedata.category(c) != "Cc").strip()
    if name in ("", ".", ".."):
        return f"image-{image.id}"
    if len(name.encode()) <= _NAME_BYTES:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(suffix.encode()) > _SUFFIX_BYTES:
        stem, suffix = name, ""
    tail = f"-{image.id}" + (f".{suffix}" if suffix else "")
    room = _NAME_BYTES - len(tail.encode())
    return stem.encode()[:room].decode(errors="ignore") + tail


def reserve(dest: Path, image: ProductImage) -> tuple[Path, Path]:
    """
    The final path for *image* under *dest*, and a fresh temporary file beside it.

    Raises ``ValueError`` when the folder does not exist, and ``OSError`` (``ELOOP``) when
    the folder or the final path is a symbolic link.
    """
    target = dest / safe_name(image) if dest.is_dir() else dest
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"no such directory: {folder}")
    for path in (folder, target):
        if path.is_symlink():
            raise OSError(errno.ELOOP, "refusing to write through a symbolic link", str(path))
    # mkstemp: created with O_EXCL and mode 0600 under a random name, so no other process
    # can guess it, pre-create it or read the bytes before the rename; short (".<8>.part"),
    # so it fits wherever the final name does.
    fd, part = tempfile.mkstemp(prefix=".", suffix=".part", dir=folder)
    os.close(fd)
    return target, Path(part)


def discard(part: Path) -> None:
    """Remove a download's temporary file, if it is there."""
    part.unlink(missing_ok=True)


def _open(part: Path) -> BinaryIO:
    """Reopen the reserved temporary file, refusing it if it was swapped for a link."""
    return os.fdopen(os.open(part, os.O_WRONLY | os.O_TRUNC | _NOFOLLOW), "wb")


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
            self.spilled = _open(self.part)
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
            with self.spilled if self.spilled is not None else _open(part) as out:
                out.writelines(self.chunks)
                if _FCHMOD is not None:  # pragma: no branch -- os.fchmod is missing on Windows only
                    _FCHMOD(out.fileno(), 0o666 & ~_UMASK)
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
