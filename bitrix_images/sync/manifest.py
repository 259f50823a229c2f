"""
The mirror's manifest: ``DEST/.bitrix-images.sqlite``, one row per image file this tool wrote.

A row is written only after its file is committed on disk (renamed into place), so the
manifest never claims a file that is not there. A crash between the rename and the record
leaves an unlisted file, which the next run adopts when its bytes are the portal's (see
``_mirror``). The manifest is what lets ``mirror --prune`` remove files safely: only a path
listed here was written by this tool; anything else in DEST is the user's.

sqlite3 is blocking: every statement runs on one worker thread of the manifest's own, so the
event loop never waits on the disk and the connection is used by one thread only. Rows are
written in batches, one transaction each, in WAL mode (readers never wait on the writer,
and a commit is one append to the log).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Final, TypeVar

import attrs

__all__ = ["MANIFEST_NAME", "Entry", "Manifest", "digest"]

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
    via        TEXT
);
CREATE INDEX IF NOT EXISTS files_by_product ON files (product_id);
"""
# Version 1 added ``via`` (how the file came: "public" or "rest"; NULL in rows written
# before). An older manifest gets the column on open; its rows stay as they are.
_VERSION: Final = 1
_COLUMNS: Final = "product_id, image_id, path, size, sha256, recorded, via"

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

    def under(self, root: Path) -> Path | None:
        """The file's path under *root*, or ``None`` when the row does not name one safely."""
        parts = PurePosixPath(self.path).parts
        # Two parts, the product's folder and a plain name: a row edited by hand (or a
        # corrupt file) never sends a removal outside the product's folder.
        if len(parts) != 2 or parts[0] != str(self.product_id) or parts[1] in ("", ".", ".."):
            return None
        return root.joinpath(*parts)


def digest(path: Path) -> tuple[int, str]:
    """The size and SHA-256 of a file (blocking: call it from a thread)."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while chunk := source.read(_HASH_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


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

    @classmethod
    async def open(cls, dest: Path) -> Manifest:
        """Open (or create) ``dest/.bitrix-images.sqlite``."""
        manifest = cls(dest / MANIFEST_NAME)
        try:
            await manifest._run(manifest._connect)
        except BaseException:
            await manifest.close()
            raise
        return manifest

    def _connect(self) -> None:
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

    async def record(self, entries: Iterable[Entry]) -> None:
        """Write (or replace) rows, in one transaction."""
        rows = [
            (e.image_id, e.product_id, e.path, e.size, e.sha256, e.recorded, e.via) for e in entries
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
                    "(image_id, product_id, path, size, sha256, recorded, via) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        db.execute(f"PRAGMA user_version = {_VERSION}")


class _transaction:
    """``BEGIN`` ... ``COMMIT``, or ``ROLLBACK`` on an error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
