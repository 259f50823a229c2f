"""
The adds an upload has sent, on disk before they go, and the lock of one upload per folder.

A run killed while the portal processes an add (SIGKILL, a power cut) leaves the image on
the portal but no trace of it in the run: the next run, listing at once, might not see it
yet and add it again. So each add is written to the journal (``SRC/.bitrix-images-upload.jsonl``,
one JSON object a line: portal, product, file name, send time) and fsynced *before* it is
sent; the next run against that portal settles every journalled add before it plans
anything: it waits until the send time plus the portal's longest request (``settle_after``,
60 s on the cloud), then lists the product again. Whatever the listing shows is then the
truth, and the entry goes.

Why inside SRC (two dotfiles, which the scan skips) rather than a per-user state folder:
the journal and the lock belong to the folder, not to the user. Another user, another host
on a shared mount, a folder moved or restored from a backup: they all see the same journal
and the same lock. The price: SRC must be writable; an upload refuses a read-only SRC
rather than run without the journal.

One upload per SRC at a time: ``SRC/.bitrix-images-upload.lock``, held with ``fcntl.flock``
for the whole run, and holding who holds it (pid, host, start time), so that the second
run can say so. (``flock`` is advisory, and over NFS it is only as good as the server's
locking.) Blocking file-system code: the caller runs it in a thread where it matters.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import attrs

__all__ = ["JOURNAL_NAME", "LOCK_NAME", "Entry", "FolderLock", "Journal", "LockedError"]

JOURNAL_NAME: Final = ".bitrix-images-upload.jsonl"
LOCK_NAME: Final = ".bitrix-images-upload.lock"
_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class LockedError(RuntimeError):
    """Another upload of the same folder holds its lock."""


@attrs.frozen
class Entry:
    """One add sent: to *portal* (its origin), product *product*, file name *name*."""

    portal: str
    product: int
    name: str
    sent: float  # time.time() when it was written, just before the send

    def line(self) -> str:
        fields = {"portal": self.portal, "product": self.product, "name": self.name}
        return json.dumps({**fields, "sent": self.sent}, ensure_ascii=True) + "\n"

    @classmethod
    def parse(cls, line: str) -> Entry | None:
        """The entry of *line*, or ``None`` for a line cut short by a crash."""
        try:
            data = json.loads(line)
            entry = cls(str(data["portal"]), int(data["product"]), str(data["name"]), data["sent"])
        except (ValueError, KeyError, TypeError):
            return None
        return entry if isinstance(entry.sent, (int, float)) else None


def _open(path: Path) -> int:
    """A file descriptor of *path*, never through a link (``O_NOFOLLOW``), regular only."""
    fd = os.open(path, _FLAGS, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a regular file: {path}")
    return fd


class Journal:
    """The adds sent and not yet settled, in ``SRC/.bitrix-images-upload.jsonl``."""

    def __init__(self, src: Path) -> None:
        self.path = src / JOURNAL_NAME
        self._fd = _open(self.path)
        self.entries: list[Entry] = []
        with os.fdopen(os.dup(self._fd), "r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                entry = Entry.parse(line)
                if entry is not None:
                    self.entries.append(entry)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def pending(self, portal: str) -> list[Entry]:
        """The entries of *portal* to settle."""
        return [entry for entry in self.entries if entry.portal == portal]

    def record(self, entries: Iterable[Entry]) -> None:
        """Append *entries* and fsync them: called before the adds are sent."""
        new = list(entries)
        if not new:
            return
        os.lseek(self._fd, 0, os.SEEK_END)
        data = "".join(entry.line() for entry in new).encode()
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)
        self.entries += new

    def settle(self, portal: str, product: int, names: Iterable[str] | None = None) -> None:
        """Forget *portal*'s entries of *product* (of *names* only, if given)."""
        keep = set(names) if names is not None else None
        before = len(self.entries)
        self.entries = [
            entry
            for entry in self.entries
            if not (
                entry.portal == portal
                and entry.product == product
                and (keep is None or entry.name in keep)
            )
        ]
        if len(self.entries) != before:
            self._rewrite()

    def _rewrite(self) -> None:
        # In place, under the folder's lock: a crash between the truncate and the fsync
        # loses the entries left, which the run that holds them settles by listing anyway.
        data = "".join(entry.line() for entry in self.entries).encode()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)


class FolderLock:
    """The lock of one upload per SRC: ``try_acquire`` once, or ``holder`` says who has it."""

    def __init__(self, src: Path) -> None:
        self.path = src / LOCK_NAME
        self._fd = _open(self.path)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        text = f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)
        return True

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it."""
        with contextlib.suppress(OSError):
            text = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip()
            if text:
                return text
        return "another process"

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1
