"""
The file-system side of a job's destination: checks before it starts, the temporary files
it names, and which file-system errors stop it.

- ``prepare_dest`` makes ``DEST`` and proves it writable before any request, so that a
  regular file there reads "not a directory" and a read-only one "cannot write to DEST",
  not an ``[Errno 17]`` or the name of an internal temporary file.
- ``temp_prefix()`` is the start of every download's temporary name:
  ``.bxi-<host>-<pid>-<random>.part``. A run killed with SIGKILL (or a power cut) leaves its
  file behind; ``remove_stale`` removes those of this host whose process is gone, and
  leaves alone those of a live process or of another host sharing the folder (NFS, shards).
- ``stops_the_job``: a full disk, a read-only or vanished file system fail every further
  write too; a name the file system refuses, a link where a file should be or a folder
  closed to us concern one image only.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["TEMP_SUFFIX", "prepare_dest", "remove_stale", "stops_the_job", "temp_prefix"]


def _host_tag() -> str:
    # Four hex digits of the host name: short, and enough to tell the hosts of one shared
    # folder apart (a collision only means a stale file is left for its own host to remove).
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]


_HOST: Final = _host_tag()
TEMP_SUFFIX: Final = ".part"
_TEMP_NAME: Final = re.compile(r"\.bxi-([0-9a-f]{4})-([0-9]{1,7})-[a-z0-9_]{8}\.part")


def temp_prefix() -> str:
    """The start of this process's temporary names (read per call: a fork has a new pid)."""
    return f".bxi-{_HOST}-{os.getpid()}-"


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
        found = _TEMP_NAME.fullmatch(entry.name)
        if found is None or found.group(1) != _HOST or _alive(int(found.group(2))):
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
