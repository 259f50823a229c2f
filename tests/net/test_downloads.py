"""
Committing downloads: the client's committer thread, its batches, and their failures.

Behaviour only, against the embedded portal over loopback: what ends up on disk, what each
download is told, and that the thread stops with the client. No timings.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import partial_files, webhook_client

import bitrix_images as bx
from bitrix_images._net import committer as _committer
from bitrix_images._net import files as _files
from bitrix_images.testing import FakePortal


def _commit_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bitrix_images-")]


async def _images(client: bx.BitrixClient, products: range) -> list[bx.ProductImage]:
    return [image async for image in client.images.list_many(products)]


async def _until(condition: Any, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.01)


async def test_many_durable_downloads_at_once_are_complete_and_the_thread_stops(
    tmp_path: Path,
) -> None:
    async with FakePortal(products=20, images_per_product=2, rate=None) as portal:
        async with webhook_client(portal) as client:
            images = await _images(client, range(1, 21))
            written = await asyncio.gather(
                *(client.images.download(i, tmp_path / f"{i.id}.png") for i in images)
            )
            assert len(_commit_threads()) >= 1
        # Closing the client stops its committer and the threads that sync for it.
        assert _commit_threads() == []
        stored = {r.id: r.content for p in range(1, 21) for r in portal.catalog.images(p)}
    assert {int(p.stem): p.read_bytes() for p in written} == stored
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize(("quick", "pooled"), [(math.inf, False), (0.0, True)])
async def test_quick_fsyncs_stay_in_the_committer_and_slow_ones_go_to_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick: float, pooled: bool
) -> None:
    # Which way a batch goes depends on how long its fsyncs take; the threshold is set here
    # to "every fsync is quick" and "every fsync is slow" so that both ways are taken.
    monkeypatch.setattr(_committer, "_QUICK_SYNC", quick)
    loop = asyncio.get_running_loop()
    jobs = [
        _committer._Commit(
            _files.Spool(str(tmp_path / f"{i}.part")), "", True, loop.create_future()
        )
        for i in range(4)
    ]
    fds = [os.open(tmp_path / f"{i}", os.O_CREAT | os.O_WRONLY, 0o600) for i in range(4)]
    os.close(fds[2])  # an fsync that fails marks its own job only
    syncers = _committer._Syncers()
    try:
        syncers.sync(list(zip(jobs, fds, strict=True)))
        used_pool = any("-sync" in t.name for t in threading.enumerate())
    finally:
        syncers.shutdown()
        for fd in (fds[0], fds[1], fds[3]):
            os.close(fd)
    assert used_pool is pooled
    assert [type(job.error) for job in jobs] == [type(None), type(None), OSError, type(None)]
    assert not any("-sync" in t.name for t in threading.enumerate())


async def test_one_bad_file_in_a_batch_fails_alone(tmp_path: Path) -> None:
    async with FakePortal(products=4, images_per_product=2, rate=None) as portal:
        async with webhook_client(portal) as client:
            images = await _images(client, range(1, 5))
            targets = [tmp_path / f"{i.id}.png" for i in images]
            # The fourth goes into a folder where its name is taken by a folder: the rename fails.
            blocked = tmp_path / "blocked"
            (blocked / _files.safe_name(images[3]) / "inside").mkdir(parents=True)
            targets[3] = blocked
            results = await asyncio.gather(
                *(client.images.download(i, t) for i, t in zip(images, targets, strict=True)),
                return_exceptions=True,
            )
    assert isinstance(results[3], OSError)
    assert [r for i, r in enumerate(results) if i != 3] == [
        t for i, t in enumerate(targets) if i != 3
    ]
    assert partial_files(tmp_path) == []
    assert [p.name for p in blocked.iterdir()] == [_files.safe_name(images[3])]


async def test_a_failed_fsync_fails_its_download_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    failed: list[int] = []

    def fsync(fd: int) -> None:
        with lock:
            if not failed:
                failed.append(fd)
                raise OSError(5, "Input/output error")
        real_fsync(fd)

    lock = threading.Lock()
    monkeypatch.setattr(os, "fsync", fsync)
    async with FakePortal(products=4, images_per_product=2, rate=None) as portal:
        async with webhook_client(portal) as client:
            images = await _images(client, range(1, 5))
            results = await asyncio.gather(
                *(client.images.download(i, tmp_path / f"{i.id}.png") for i in images),
                return_exceptions=True,
            )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{i.id}.png"
        for i, r in zip(images, results, strict=True)
        if not isinstance(r, BaseException)
    )


async def test_a_download_cancelled_while_its_file_is_written_is_not_put_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _committer.write_out
    taken = threading.Event()
    go_on = threading.Event()

    def held_write(spool: _files.Spool) -> int:
        taken.set()
        go_on.wait(30)  # the thread has the file; the download is cancelled meanwhile
        return original(spool)

    monkeypatch.setattr(_committer, "write_out", held_write)
    async with FakePortal(products=1, rate=None) as portal:
        async with webhook_client(portal) as client:
            image = await client.images.get(1, 1)
            task = asyncio.ensure_future(client.images.download(image, tmp_path))
            await _until(taken.is_set)
            task.cancel()
            await asyncio.sleep(0.05)
            assert not task.done()  # it waits for the thread to let go of its file
            task.cancel()  # a second cancel does not make it stop waiting
            await asyncio.sleep(0.05)
            assert not task.done()
            go_on.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert list(tmp_path.iterdir()) == []
            # The client goes on committing.
            monkeypatch.setattr(_committer, "write_out", original)
            assert (await client.images.download(image, tmp_path)).exists()
        assert portal.counters.in_flight == 0


async def test_the_idle_thread_ends_and_a_new_one_starts_when_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_committer, "_IDLE", 0.01)
    async with FakePortal(products=1, rate=None) as portal:
        async with webhook_client(portal) as client:
            image = await client.images.get(1, 1)
            await client.images.download(image, tmp_path / "a.png")
            await _until(lambda: _commit_threads() == [])
            await client.images.download(image, tmp_path / "b.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
    assert _commit_threads() == []


async def test_a_closed_committer_takes_no_more_files(tmp_path: Path) -> None:
    committer = _committer.Committer()
    await committer.close()  # never started: nothing to stop
    target, part = _files.reserve(str(tmp_path), bx.ProductImage(id=1, name="x.png"))
    spool = _files.Spool(part)
    spool.add(b"data")
    with pytest.raises(RuntimeError, match="closed"):
        await committer.commit(spool, target, durable=True)
    _files.discard(part)
    assert list(tmp_path.iterdir()) == []


def test_every_buffer_is_written_in_order(tmp_path: Path) -> None:
    for chunks in (
        [],
        [b"one"],
        [b"a", b"bc", b"def"],
        [bytes([i % 251]) * 3 for i in range(3000)],
    ):
        path = tmp_path / "out"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _files._write_all(fd, list(chunks))
        finally:
            os.close(fd)
        assert path.read_bytes() == b"".join(chunks)


async def test_a_temporary_file_swapped_for_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.png"
    victim.write_bytes(b"keep")
    out = tmp_path / "out"
    out.mkdir()
    async with FakePortal(products=1, rate=None) as portal:
        async with webhook_client(portal) as client:
            image = await client.images.get(1, 1)
            portal.inject("delay", method="download", delay=0.5)
            task = asyncio.ensure_future(client.images.download(image, out, via="rest"))
            await _until(lambda: portal.counters.in_flight > 0)
            (part,) = partial_files(out)
            part.unlink()
            part.symlink_to(victim)  # another user of the folder swaps it meanwhile
            with pytest.raises(OSError) as info:  # noqa: PT011 -- the errno is checked below
                await task
            assert info.value.errno == errno.ELOOP
    assert victim.read_bytes() == b"keep"
    assert list(out.iterdir()) == []


async def test_a_file_that_cannot_be_finished_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fchmod(fd: int, mode: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_files, "_FCHMOD", fchmod)
    async with FakePortal(products=1, rate=None) as portal:
        async with webhook_client(portal) as client:
            image = await client.images.get(1, 1)
            for durable in (True, False):
                with pytest.raises(OSError, match="No space"):
                    await client.images.download(image, tmp_path, durable=durable)
    assert list(tmp_path.iterdir()) == []
