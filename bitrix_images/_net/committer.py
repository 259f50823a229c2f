"""
Putting finished downloads in place: one thread per client, woken once per batch.

A durable download must be written, fsynced and renamed, and each of those steps can wait
on the file system's journal for a millisecond or more, so none of them may run on the
event loop. Handing each file to a thread of its own (``asyncio.to_thread``) cost more than
the fsync: 2,000 downloads made 24,500 context switches, the loop waking for every file and
then waiting for the GIL (benchmarks/RESULTS.md, W4). Here the files that finish in one
turn of the loop go to the committer thread together, with one wake-up; it writes them all,
syncs them all (in parallel, see ``_sync``), renames them all, and wakes the loop once.

Cancellation: a file the thread has not taken yet is dropped at once; one it has taken is
waited for, and is not renamed into place if its download was cancelled in the meantime.
Either way nothing is written for a download after it has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from .files import Spool, discard, place, write_out

__all__ = ["Committer"]

_INLINE: Final = 1024 * 1024  # bytes a non-durable download may commit on the loop
# The committer thread ends after this many idle seconds (and starts again when needed),
# so that a client that is never closed does not keep a thread for ever.
_IDLE: Final = 10.0
# fsyncs made at once. On ext4 concurrent fsyncs share one journal commit; one after the
# other each waits for its own (measured on a busy disk: 6-9 ms a file in a row, 0.6-0.8 ms
# with 6 or 16 at once), so a batch is synced by several threads.
_SYNCERS: Final = 8
# fsyncs quicker than this (a tmpfs, a disk with a write cache) are made one after the other
# in the committer thread: handing them to the pool would cost more than they do.
_QUICK_SYNC: Final = 0.0005

_QUEUED, _TAKEN, _DROPPED = 0, 1, 2


class _Commit:
    """One file to commit, and how its download learns the outcome."""

    __slots__ = ("cancelled", "durable", "error", "future", "size", "spool", "state", "target")

    def __init__(
        self, spool: Spool, target: str, durable: bool, future: asyncio.Future[int]
    ) -> None:
        self.spool = spool
        self.target = target
        self.durable = durable
        self.future = future
        self.state = _QUEUED
        self.cancelled = False  # the download was cancelled after the thread took the file
        self.size = 0
        self.error: BaseException | None = None


class Committer:
    """
    The committing of one client's downloads (see the module docstring).

    ``commit`` is called on the event loop; ``close`` stops the thread and waits for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _thread, the job states and _closed
        self._queue: queue.SimpleQueue[list[_Commit] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: list[_Commit] = []  # handed to the thread at the end of this loop turn
        self._closed = False
        self._stopped: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    async def commit(self, spool: Spool, target: str, *, durable: bool) -> int:
        """Put the spooled bytes at *target*; return their size."""
        if not durable and spool.size <= _INLINE:
            # Writing a small file to the page cache and renaming it takes less than
            # handing it to a thread (measured: the hop cost 0.4 ms of CPU a file, twice
            # the write), so it is done here, as aiohttp users do.
            return place(spool, write_out(spool), target)
        if self._closed:
            raise RuntimeError("this client is closed")
        loop = asyncio.get_running_loop()
        job = _Commit(spool, target, durable, loop.create_future())
        if not self._pending:
            loop.call_soon(self._hand_over)
        self._pending.append(job)
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            with self._lock:
                taken = job.state == _TAKEN
                if taken:
                    job.cancelled = True  # not renamed into place unless it is already
                else:
                    job.state = _DROPPED  # the thread will skip it
            while taken and not job.future.done():
                # The thread has the file: let it finish, so that nothing is written
                # after the caller has been told the download was cancelled.
                try:
                    await asyncio.wait({job.future})
                except asyncio.CancelledError:
                    continue
            raise

    def _hand_over(self) -> None:
        """Give the thread the files of this loop turn, with one wake-up."""
        batch, self._pending = self._pending, []
        if not batch:
            return  # close() handed them over already
        with self._lock:
            self._queue.put(batch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bitrix_images-commit", daemon=True
                )
                self._thread.start()

    async def close(self) -> None:
        """Let the thread finish what it has, then stop it (and its syncing threads)."""
        self._hand_over()
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
                self._stopped = (loop, stopped)
        if thread is not None:
            # Told by the thread itself, not through the loop's executor (which may be
            # shut down already when a client is closed late).
            await asyncio.shield(stopped)
            thread.join()

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        syncers = _Syncers()
        try:
            while True:
                try:
                    batch = self._queue.get(timeout=_IDLE)
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue  # pragma: no cover -- a hand-over raced the idle timeout
                stop = batch is None
                jobs = batch or []
                while not stop:  # everything handed over meanwhile joins this batch
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    stop = more is None
                    jobs.extend(more or ())
                self._commit(jobs, syncers)
                if stop:
                    with self._lock:
                        self._thread = None
                        stopping = self._stopped
                    if stopping is not None:  # pragma: no branch -- close() set it with the stop
                        loop, stopped = stopping
                        with contextlib.suppress(RuntimeError):  # its loop closed: none waits
                            loop.call_soon_threadsafe(_set_done, stopped)
                    return
        finally:
            syncers.shutdown()

    def _commit(self, jobs: list[_Commit], syncers: _Syncers) -> None:
        """Write, then sync, then rename every file of the batch; tell the loops once."""
        with self._lock:
            jobs = [job for job in jobs if job.state == _QUEUED]
            for job in jobs:
                job.state = _TAKEN
        fds: dict[_Commit, int] = {}
        for job in jobs:
            try:
                fds[job] = write_out(job.spool)
            except BaseException as error:  # handed to its download, raised there
                job.error = error
        syncers.sync([(job, fd) for job, fd in fds.items() if job.durable])
        for job, fd in fds.items():
            with self._lock:
                cancelled = job.cancelled
            if job.error is not None or cancelled:
                os.close(fd)
                discard(job.spool.part)
                continue
            try:
                job.size = place(job.spool, fd, job.target)
            except BaseException as error:  # handed to its download, raised there
                job.error = error
        by_loop: dict[asyncio.AbstractEventLoop, list[_Commit]] = {}
        for job in jobs:
            by_loop.setdefault(job.future.get_loop(), []).append(job)
        for loop, done in by_loop.items():
            # RuntimeError: the loop closed while its downloads were committed; none waits.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done)


class _Syncers:
    """The committer thread's fsyncs, several at once (a pool made on first need)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def sync(self, pairs: list[tuple[_Commit, int]]) -> None:
        """
        fsync the descriptors of *pairs*; a failure marks its job.

        One after the other while they are quick; from the first slow one on, the rest of
        the batch at once in the pool.
        """
        for index, pair in enumerate(pairs):
            started = time.perf_counter()
            _fsync(pair)
            if time.perf_counter() - started > _QUICK_SYNC and index + 1 < len(pairs):
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        _SYNCERS, thread_name_prefix="bitrix_images-sync"
                    )
                for _ in self._pool.map(_fsync, pairs[index + 1 :]):
                    pass
                return

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _fsync(pair: tuple[_Commit, int]) -> None:
    job, fd = pair
    try:
        os.fsync(fd)
    except BaseException as error:  # handed to its download, raised there
        job.error = error


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _settle(jobs: list[_Commit]) -> None:
    """Tell each download its outcome (on its loop)."""
    for job in jobs:
        if job.cancelled:
            job.future.cancel()  # its download is raising CancelledError already
        elif job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.size)
