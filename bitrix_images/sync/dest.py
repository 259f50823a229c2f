"""
The file-system side of a job's destination: checks before it starts, the temporary files
it names, and which file-system errors stop it.

- ``prepare_dest`` makes ``DEST`` and proves it writable before any request, so that a
  regular file there reads "not a directory" and a read-only one "cannot write to DEST",
  not an ``[Errno 17]`` or the name of an internal temporary file; ``check_dest`` makes the
  same checks for a dry run, creating nothing.
- ``remove_ours``: prune's look at a recorded file and its removal, made through the
  product folder's descriptor, opened without following a link, so that a product folder
  replaced by a link to elsewhere is never entered.
- ``remove_stale``: a run killed with SIGKILL (or a power cut) leaves its temporary file
  (``temp_prefix()``, named in ``bitrix_images._dest``) behind; this removes those of this
  host whose process is gone, and leaves alone those of a live process or of another host
  sharing the folder (NFS, shards).
- ``Names`` gives each image of a product its own file name, ``reason`` an error's words,
  and a few one-line file-system calls (microseconds: made inline, not in a thread) keep
  the job's code readable.
- ``stops_the_job``: a full disk, a read-only or vanished file system fail every further
  write too; a name the file system refuses, a link where a file should be or a folder
  closed to us concern one image only.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from pathlib import Path
from typing import Final

from .._wire.naming import HOST, TEMP_NAME, TEMP_SUFFIX, safe_name, temp_prefix
from ..models import ProductImage
from .manifest import digest, not_regular

__all__ = [
    "TEMP_SUFFIX",
    "Names",
    "check_dest",
    "exists",
    "file_size",
    "kind_of",
    "make_dir",
    "prepare_dest",
    "reason",
    "remove",
    "remove_ours",
    "remove_stale",
    "same_file",
    "stops_the_job",
    "temp_prefix",
]

_FOLDER_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# Errors that every further write into DEST would meet as well (write(2), rename(2)).
_SHARED: Final = frozenset(
    code
    for code in (
        errno.ENOSPC,
        errno.EROFS,
        getattr(errno, "EDQUOT", None),
        errno.EIO,
        getattr(errno, "ESTALE", None),
        errno.ENODEV,
    )
    if code is not None
)


def prepare_dest(dest: Path) -> None:
    """
    Create *dest* (and its parents) and check that files can be made in it.

    Raises ``NotADirectoryError`` or ``PermissionError``-style ``OSError`` with a message
    that names *dest* and says what is wrong with it.
    """
    if dest.exists() and not dest.is_dir():
        raise _said(NotADirectoryError, errno.ENOTDIR, f"{dest} is not a directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(), suffix=TEMP_SUFFIX, dir=dest)
    except NotADirectoryError:
        # A parent is a regular file.
        raise _said(NotADirectoryError, errno.ENOTDIR, f"{dest} is not a directory") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise _said(OSError, error.errno, f"cannot write to {dest}: {reason}") from None
    os.close(fd)
    os.unlink(probe)


def check_dest(dest: Path) -> None:
    """
    ``prepare_dest``'s checks, for a dry run: nothing is created. *dest*, or the nearest
    folder above it that exists, must be a directory this process may write to; the
    errors are ``prepare_dest``'s.
    """
    here = dest
    while not os.path.lexists(here) and here.parent != here:
        here = here.parent
    if not here.is_dir():
        raise _said(NotADirectoryError, errno.ENOTDIR, f"{dest} is not a directory")
    if not os.access(here, os.W_OK | os.X_OK):
        reason = os.strerror(errno.EACCES)
        raise _said(OSError, errno.EACCES, f"cannot write to {dest}: {reason}")


def _said(kind: type[OSError], code: int | None, message: str) -> OSError:
    """An ``OSError`` whose text is *message* alone (no ``[Errno N]``), keeping its errno."""
    error = kind(message)
    error.errno = code
    return error


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # pragma: no cover -- EPERM, seen by a non-root user only
        return True  # it exists: another user's
    return True


def remove_stale(folder: Path) -> int:
    """
    Remove the temporary files of dead runs of this host in *folder*; return how many.

    Only names of this tool's pattern, only regular files, only of this host and of a
    process that no longer exists. Errors (a file removed meanwhile) are ignored.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        found = TEMP_NAME.fullmatch(entry.name)
        if found is None or found.group(1) != HOST or _alive(int(found.group(2))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        except OSError:  # pragma: no cover -- removed meanwhile (another resume), or not ours
            continue
    return removed


def stops_the_job(error: OSError) -> bool:
    """Whether *error* would repeat for every further file (a full or read-only disk)."""
    return error.errno in _SHARED


class Names:
    """Unique file names within one product's folder (case-insensitive file systems)."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def keep(self, name: str) -> None:
        self._taken.add(name.casefold())

    def claim(self, image: ProductImage) -> str:
        name = safe_name(image)
        candidate = name
        while candidate.casefold() in self._taken:
            # A later image with a name already taken keeps its id in front of it.
            candidate = f"{image.id}-{candidate}"
        self._taken.add(candidate.casefold())
        return candidate

    def free(self, image: ProductImage, folder: Path) -> Path:
        """A path in *folder* for *image* that no other image and no file there has."""
        path = folder / self.claim(image)
        while exists(path):
            path = folder / self.claim(image)
        return path


def reason(error: Exception) -> str:
    """What went wrong, in words: the OS's text for an ``OSError``, without its errno."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__


async def same_file(path: Path, size: int, sha256: str) -> bool:
    """
    Whether *path* holds the bytes of that size and SHA-256 (not if unreadable, nor if it
    is not a regular file: a FIFO there is never opened for reading).
    """
    try:
        return await asyncio.to_thread(digest, path) == (size, sha256)
    except OSError:
        return False


# File-system metadata calls take microseconds: cheaper inline than a thread hop (as in
# images.download), kept in plain functions so that the event loop code stays readable.


def make_dir(path: Path, *, parents: bool = False) -> None:
    path.mkdir(parents=parents, exist_ok=True)


def exists(path: Path) -> bool:
    return os.path.lexists(path)


def kind_of(path: Path) -> str | None:
    """What is at *path* when it is not a regular file ("a FIFO", "a symbolic link");
    ``None`` for a regular file or nothing."""
    try:
        return not_regular(path.lstat().st_mode)
    except OSError:
        return None


def remove_ours(folder: Path, name: str, size: int, sha256: str, *, dry_run: bool) -> str | None:
    """
    Remove *folder*/*name* if it is still the file this tool wrote (that size and SHA-256):
    ``None`` when it is (and, unless *dry_run*, is removed now), else why not, in words
    that follow the file's name: "gone", "changed since it was written", "is a FIFO",
    "is a symbolic link", "is in a folder that is a link or not a folder (not entered)".

    Made through the folder's descriptor, opened without following a link: a product
    folder that is a link (to outside DEST, say) is never entered, nor one swapped for a
    link meanwhile. Blocking: call it from a thread.
    """
    try:
        fd = os.open(folder, _FOLDER_FLAGS)
    except FileNotFoundError:
        return "gone"
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            return "is in a folder that is a link or not a folder (not entered)"
        raise
    try:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return "gone"
        kind = not_regular(info.st_mode)
        if kind is not None:
            return f"is {kind}"
        try:
            found = digest(name, dir_fd=fd)
        except OSError:  # pragma: no cover -- a race: swapped for something else since the stat
            found = None
        if found != (size, sha256):
            return "changed since it was written"
        if not dry_run:
            os.unlink(name, dir_fd=fd)
        return None
    finally:
        os.close(fd)


def file_size(path: Path) -> int | None:
    """The size of a regular file (not through a symlink), or ``None``."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_size if path.is_file() and not path.is_symlink() else None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
