"""
A download's file: reserving its name, spooling its bytes, committing or discarding it.

The bytes of a download go to a temporary file beside the target, which is renamed into
place only when complete (and, if durable, synced), so a failure never leaves a partial
file under the final name. Nothing here touches the network; the committing of durable
downloads is batched in one thread per client (``committer``).

The temporary file is made as ``tempfile.mkstemp`` makes one (``O_EXCL``, mode 0600, an
unpredictable short name), without its per-call cost, and reopened with ``O_NOFOLLOW``; a
final path or a folder that is a symbolic link is refused with an ``OSError``
(``errno.ELOOP``) naming the path, so a download never writes anywhere but where it was
asked to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
from typing import Final

from .._wire.naming import TEMP_SUFFIX, safe_name, temp_prefix
from ..models import ProductImage

__all__ = ["Spool", "discard", "place", "reserve", "write_out"]

# The process umask, read once (reading it means setting it, which is not thread-safe): a
# finished download gets the mode a plain open() would have given it, not mkstemp's 0600.
_UMASK: Final = os.umask(0o022)
os.umask(_UMASK)
_MODE: Final = 0o666 & ~_UMASK
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)  # not on Windows, where links are rare
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_FCHMOD: Final = getattr(os, "fchmod", None)  # not on Windows before Python 3.13
# Temporary names: 32 random bits in 8 hex digits, from a generator seeded by os.urandom (as
# tempfile's); the name also holds the pid, so a fork's copy of the generator cannot clash.
_NAMES: Final = random.Random()
_TRIES: Final = 100
_CREATE: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
# writev takes at most IOV_MAX (1024 on Linux and macOS) buffers; more are joined first.
_IOV_MAX: Final = 1024


def reserve(dest: str, image: ProductImage) -> tuple[str, str]:
    """
    The final path for *image* under *dest*, and a fresh temporary file beside it.

    Raises ``ValueError`` when the folder does not exist, and ``OSError`` (``ELOOP``) when
    the folder or the final path is a symbolic link. Plain ``os.path`` strings: this runs
    once per download, on the event loop, and pathlib's objects cost more than the checks.
    """
    # Two lstat calls where isdir and islink took four: no trailing separator, so that a
    # link to a folder is seen as the link it is.
    dest = dest.rstrip(os.sep) or os.sep
    mode = _mode(dest)
    if mode is not None and stat.S_ISDIR(mode):
        folder, target = dest, os.path.join(dest, safe_name(image))
        _refuse_link(target, _mode(target))
    else:
        _refuse_link(dest, mode)  # a link to a folder or to a file alike
        folder, target = os.path.dirname(dest) or ".", dest
        mode = _mode(folder)
        _refuse_link(folder, mode)
        if mode is None or not stat.S_ISDIR(mode):
            raise ValueError(f"no such directory: {folder}")
    return target, _create_temporary(folder)


def _mode(path: str) -> int | None:
    """The ``lstat`` mode of *path*, ``None`` when nothing is there."""
    try:
        return os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def _refuse_link(path: str, mode: int | None) -> None:
    if mode is not None and stat.S_ISLNK(mode):
        raise OSError(errno.ELOOP, "refusing to write through a symbolic link", path)


def _create_temporary(folder: str) -> str:
    """
    A new empty temporary file in *folder*, as ``tempfile.mkstemp`` makes one.

    Created with ``O_EXCL | O_NOFOLLOW`` and mode 0600 under a random name, so no other
    process can guess it, pre-create it or read the bytes before the rename; short
    (".bxi-<host>-<pid>-<8 hex digits>.part", under 40 bytes), so it fits wherever the final name
    does; it names its process, so that a later run can remove it once that process is
    gone (a SIGKILL, a power cut: ``sync.dest``). Made before the fetch, so that a folder
    we cannot write to fails before any request. (``mkstemp`` itself spent half of a
    download's file handling on this: its per-call parameter checks and name generator.)
    """
    prefix = os.path.join(folder, temp_prefix())
    bits = _NAMES.getrandbits
    for _ in range(_TRIES):
        part = f"{prefix}{bits(32):08x}{TEMP_SUFFIX}"
        try:
            fd = os.open(part, _CREATE, 0o600)
        except FileExistsError:  # pragma: no cover -- one name in 2**32 a try
            continue
        os.close(fd)
        return part
    raise FileExistsError(  # pragma: no cover -- see above
        errno.EEXIST, "no free temporary file name", folder
    )


def discard(part: str) -> None:
    """Remove a download's temporary file, if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part)


def _open(part: str, *, truncate: bool) -> int:
    """Reopen the reserved temporary file, refusing it if it was swapped for a link."""
    # Without O_TRUNC when nothing was written to it yet: truncating an empty file still
    # updates its times, a journal transaction of its own on ext4.
    flags = os.O_WRONLY | _NOFOLLOW | _CLOEXEC | (os.O_TRUNC if truncate else 0)
    return os.open(part, flags)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write *chunks* in order, all of them (a short write is finished with plain writes)."""
    if not chunks:
        return
    if len(chunks) == 1:
        data = chunks[0]
    elif len(chunks) <= _IOV_MAX:
        total = sum(map(len, chunks))
        written = os.writev(fd, chunks)
        if written == total:  # pragma: no branch -- short only on a full disk or a signal
            return
        data = b"".join(chunks)[written:]  # pragma: no cover -- see the line above
    else:
        data = b"".join(chunks)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Spool:
    """
    A download's bytes: in memory up to ``SPOOL`` bytes, then in the temporary file *part*.

    Most product images are far smaller than the limit, so their file is opened, written,
    synced and renamed in one go; a large one goes to disk as it arrives.
    """

    SPOOL: Final = 4 * 1024 * 1024

    __slots__ = ("chunks", "part", "size", "spilled")

    def __init__(self, part: str) -> None:
        self.part = part
        self.chunks: list[bytes] = []
        self.size = 0
        self.spilled: int | None = None  # the temporary file's descriptor, once spilled

    def add(self, chunk: bytes) -> bool:
        """Keep *chunk*; true when the bytes in memory should move to the file."""
        self.size += len(chunk)
        self.chunks.append(chunk)
        return self.size > self.SPOOL

    def spill(self) -> None:
        """Append the bytes in memory to the temporary file (runs in a thread)."""
        if self.spilled is None:
            # O_TRUNC: an earlier, failed attempt may have spilled into it.
            self.spilled = _open(self.part, truncate=True)
        _write_all(self.spilled, self.chunks)
        self.chunks.clear()

    def discard(self) -> None:
        """Let go of a failed attempt's bytes; the caller removes the temporary file."""
        if self.spilled is not None:
            # Empty it too: the next attempt, if small, writes without truncating.
            try:
                os.ftruncate(self.spilled, 0)
            finally:
                os.close(self.spilled)
                self.spilled = None
        self.chunks.clear()
        self.size = 0

    def open(self) -> int:
        """The temporary file's descriptor, holding what was spilled (the caller closes it)."""
        fd, self.spilled = self.spilled, None
        return fd if fd is not None else _open(self.part, truncate=False)


def write_out(spool: Spool) -> int:
    """
    Write what is left of *spool* to its temporary file and give it the usual mode.

    Returns the open descriptor, for the caller to sync, close and rename; on failure the
    descriptor is closed and the temporary file removed.
    """
    fd = spool.open()
    try:
        _write_all(fd, spool.chunks)
        if _FCHMOD is not None:  # pragma: no branch -- os.fchmod is missing on Windows only
            # A finished download gets the mode a plain open() would have given it, not
            # mkstemp's 0600.
            _FCHMOD(fd, _MODE)
    except BaseException:
        os.close(fd)
        discard(spool.part)
        raise
    finally:
        spool.chunks.clear()
    return fd


def place(spool: Spool, fd: int, target: str) -> int:
    """Close *fd* and rename the temporary file to *target*; return the bytes written."""
    try:
        os.close(fd)
        os.replace(spool.part, target)
    except BaseException:
        discard(spool.part)
        raise
    return spool.size
