"""
The mirror's manifest: ``DEST/.bitrix-images.sqlite``, one row per image file this tool wrote.

A row is written only after its file is committed on disk (renamed into place), so the
manifest never claims a file that is not there. A crash between the rename and the record
leaves an unlisted file, which the next run adopts when its bytes are the portal's (see
``_mirror``). The manifest is what lets ``mirror --prune`` remove files safely: only a path
listed here was written by this tool; anything else in DEST is the user's.

The manifest is bound to its portal (``binding``): one row of ``portal`` holds its host,
its ``member_id`` when known, and the generation of rows it trusts (a rebind raises it).
The manifest must be a regular file, and so must its ``-wal``, ``-shm`` and ``-journal``
companions when present: a link there is refused, never written through.

sqlite3 is blocking: every statement runs on one worker thread of the manifest's own, so the
event loop never waits on the disk and the connection is used by one thread only. Rows are
written in batches, one transaction each, in WAL mode (readers never wait on the writer,
and a commit is one append to the log).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Final, TypeVar

import attrs

from .binding import Binding

__all__ = ["MANIFEST_NAME", "Entry", "Manifest", "digest", "not_regular"]

MANIFEST_NAME: Final = ".bitrix-images.sqlite"
_HASH_CHUNK: Final = 1024 * 1024
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS files (
    image_id   INTEGER PRIMARY KEY,
    product_id INTEGER NOT NULL,
    path       TEXT    NOT NULL UNIQUE,
    size       INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    recorded   REAL    NOT NULL,
    via        TEXT,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_by_product ON files (product_id);
CREATE TABLE IF NOT EXISTS portal (
    one        INTEGER PRIMARY KEY CHECK (one = 1),
    host       TEXT    NOT NULL,
    member_id  TEXT,
    generation INTEGER NOT NULL
);
"""
# Version 1 added ``via`` (how the file came: "public" or "rest"; NULL in rows written
# before); version 2 the ``portal`` binding and each row's ``generation`` (0 in rows
# written before, the generation of a manifest bound on its first run). An older manifest
# gets them on open; its rows stay as they are.
_VERSION: Final = 2
_COLUMNS: Final = "product_id, image_id, path, size, sha256, recorded, via, generation"
# The files SQLite keeps beside the database: each must be a regular file too.
_COMPANIONS: Final = ("", "-wal", "-shm", "-journal")
_READ_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS: Final = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)

T = TypeVar("T")


@attrs.frozen
class Entry:
    """One file this tool wrote: whose image it holds, where (relative to DEST), what bytes."""

    product_id: int
    image_id: int
    path: str  # POSIX, relative to DEST: "<product_id>/<file name>"
    size: int
    sha256: str
    recorded: float = attrs.field(factory=time.time, eq=False)
    # How the file came: "public" (its detailUrl) or "rest" (its downloadUrl); None in
    # rows written before the manifest recorded it.
    via: str | None = attrs.field(default=None, eq=False)
    # The binding's generation when the row was written: a row of an older one was written
    # for another portal (a rebind since), so its file is checked again, not trusted by id.
    generation: int = attrs.field(default=0, eq=False)

    def under(self, root: Path) -> Path | None:
        """The file's path under *root*, or ``None`` when the row does not name one safely."""
        parts = PurePosixPath(self.path).parts
        # Two parts, the product's folder and a plain name: a row edited by hand (or a
        # corrupt file) never sends a removal outside the product's folder.
        if len(parts) != 2 or parts[0] != str(self.product_id) or parts[1] in ("", ".", ".."):
            return None
        return root.joinpath(*parts)


def not_regular(mode: int) -> str | None:
    """What a file of *mode* is when it is not a regular file ("a FIFO"), else ``None``."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def digest(path: Path | str, *, dir_fd: int | None = None) -> tuple[int, str]:
    """
    The size and SHA-256 of a regular file (blocking: call it from a thread).

    Opened without following a link and without blocking (``O_NOFOLLOW | O_NONBLOCK``),
    then checked with ``fstat``: a FIFO, a device or a link at *path* is an ``OSError``
    saying what it is, never an ``open()`` that waits forever for a writer.
    """
    try:
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not followed", str(path)) from None
        raise
    with os.fdopen(fd, "rb") as source:
        kind = not_regular(os.fstat(fd).st_mode)
        if kind is not None:
            raise OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))
        sha = hashlib.sha256()
        size = 0
        while chunk := source.read(_HASH_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def _check_regular(path: Path) -> None:
    """Refuse a manifest (or a companion of it) that is there but not a regular file."""
    for suffix in _COMPANIONS:
        companion = path.with_name(path.name + suffix)
        try:
            mode = companion.lstat().st_mode
        except FileNotFoundError:
            continue
        kind = not_regular(mode)
        if kind is not None:
            error = OSError(f"the manifest {companion} is {kind}, not a regular file; refusing it")
            error.errno = errno.ELOOP if stat.S_ISLNK(mode) else errno.EINVAL
            raise error


class Manifest:
    """
    The manifest of one DEST, opened with :meth:`open` and closed with :meth:`close`.

    Every method is a coroutine that runs its statements on the manifest's single thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitrix-manifest")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self.generation = 0  # the binding's: rows written now carry it

    @classmethod
    async def open(cls, dest: Path) -> Manifest:
        """
        Open (or create) ``dest/.bitrix-images.sqlite``; an ``OSError`` when it (or its
        ``-wal``, ``-shm`` or ``-journal`` file) is there but not a regular file.
        """
        manifest = cls(dest / MANIFEST_NAME)
        try:
            await manifest._run(manifest._connect)
        except BaseException:
            await manifest.close()
            raise
        return manifest

    def _connect(self) -> None:
        _check_regular(self.path)
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of the process (the case that
            # matters here); a power cut may lose the last commits, and then the files
            # they named are adopted by hash on the next run.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            _migrate(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    async def _run(self, job: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, job)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # A statement cannot be stopped half-way: let it end before the caller goes on.
            await asyncio.wait({future})
            raise
        except sqlite3.Error as error:
            # A read-only DEST, a full disk, a corrupt or foreign file: a file-system
            # problem to the caller, named by the manifest's path.
            raise OSError(f"the manifest {self.path} cannot be used: {error}") from None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the manifest is closed")
        return self._db

    async def product(self, product_id: int) -> dict[int, Entry]:
        """The rows of one product, keyed by image id."""

        def read() -> dict[int, Entry]:
            rows = self._conn().execute(
                f"SELECT {_COLUMNS} FROM files WHERE product_id = ?",  # noqa: S608 -- a constant list
                (product_id,),
            )
            return {row[1]: Entry(*row) for row in rows}

        return await self._run(read)

    async def entries(self) -> list[Entry]:
        """Every row, by product and image id."""

        def read() -> list[Entry]:
            rows = self._conn().execute(
                f"SELECT {_COLUMNS} FROM files ORDER BY product_id, image_id"  # noqa: S608 -- constant
            )
            return [Entry(*row) for row in rows]

        return await self._run(read)

    async def binding(self) -> Binding | None:
        """The portal the manifest is bound to (``None``: not bound yet)."""

        def read() -> Binding | None:
            row = self._conn().execute("SELECT host, member_id, generation FROM portal").fetchone()
            return None if row is None else Binding(*row)

        bound = await self._run(read)
        if bound is not None:
            self.generation = bound.generation
        return bound

    async def bind(self, binding: Binding) -> None:
        """Bind the manifest to *binding*'s portal; rows written from now carry its generation."""

        def write() -> None:
            db = self._conn()
            with _transaction(db):
                db.execute(
                    "INSERT OR REPLACE INTO portal (one, host, member_id, generation) "
                    "VALUES (1, ?, ?, ?)",
                    (binding.host, binding.member_id, binding.generation),
                )

        await self._run(write)
        self.generation = binding.generation

    async def record(self, entries: Iterable[Entry]) -> None:
        """Write (or replace) rows, in one transaction, with the binding's generation."""
        now = self.generation
        rows = [
            (e.image_id, e.product_id, e.path, e.size, e.sha256, e.recorded, e.via, now)
            for e in entries
        ]
        if not rows:
            return

        def write() -> None:
            db = self._conn()
            with _transaction(db):
                # A path now holds another image (its old one went away unpruned): the
                # newer row wins, as the file does.
                db.executemany("DELETE FROM files WHERE path = ?", [(row[2],) for row in rows])
                db.executemany(
                    "INSERT OR REPLACE INTO files "
                    "(image_id, product_id, path, size, sha256, recorded, via, generation) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )

        await self._run(write)

    async def forget(self, image_ids: Iterable[int]) -> None:
        """Remove rows, in one transaction."""
        ids = [(image_id,) for image_id in image_ids]
        if not ids:
            return

        def write() -> None:
            db = self._conn()
            with _transaction(db):
                db.executemany("DELETE FROM files WHERE image_id = ?", ids)

        await self._run(write)

    async def close(self) -> None:
        """Close the database and its thread (harmless when already closed)."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            db, self._db = self._db, None
            if db is not None:
                db.close()

        try:
            await self._run(shut)
        finally:
            self._thread.shutdown(wait=False)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a manifest written by an earlier version up to ``_VERSION``."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version >= _VERSION:
        return
    columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
    with _transaction(db):
        if "via" not in columns:
            db.execute("ALTER TABLE files ADD COLUMN via TEXT")
        if "generation" not in columns:
            db.execute("ALTER TABLE files ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
        db.execute(f"PRAGMA user_version = {_VERSION}")


class _transaction:
    """``BEGIN`` ... ``COMMIT``, or ``ROLLBACK`` on an error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
