"""Cancellation and cleanup: cancel every public call at each of its await points, and
while a slow answer, a backoff or a token refresh is in progress.

After each cancellation: no task of the client is left running, the client's pool holds no
connection, the portal has no request in flight, the request semaphore and the refresh lock
are free, no partial download file is left, and the client still works. The suite runs with
``-W error``, so an unclosed session or connector fails it too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest
from support import PNG, idle, oauth_client, partial_files, settle, webhook_client

import bitrix_images as bx
from bitrix_images import mirror
from bitrix_images.testing import OPERATION_TIME_LIMIT, FakePortal

Op = Callable[[bx.BitrixClient, FakePortal, Path], Awaitable[object]]
P = ParamSpec("P")
T = TypeVar("T")
# A generous limit for waits on a thread or on a cancelled call's clean-up: a slow or loaded
# machine is not a bug, a hang is.
PATIENCE = 60.0


def steps() -> Iterator[int]:
    """How many steps to let a call run before cancelling it: every count up to 24 (the await
    points of one request over loopback), then sparser, without end: the sweep stops when
    the call completes on its own."""
    yield from range(25)
    size = 32
    while True:
        yield size
        yield size * 3 // 2
        size *= 2


class ThreadWatch(concurrent.futures.ThreadPoolExecutor):
    """
    The loop's default executor (``asyncio.to_thread``), knowing when its threads are busy.

    A download commits its file in a thread; how many loop iterations that takes depends on
    the machine (the GIL switch interval, the CPU, the disk). While a thread works, the sweep
    waits for it to finish instead of counting iterations.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(max_workers=4, thread_name_prefix="sweep")
        self._loop = loop
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        # run_in_executor calls this on the loop's thread; the job ends on a worker thread.
        self._busy += 1
        self._idle.clear()
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(lambda _: self._loop.call_soon_threadsafe(self._done))
        return future

    def _done(self) -> None:
        self._busy -= 1
        if not self._busy:
            self._idle.set()

    @property
    def busy(self) -> bool:
        return self._busy > 0

    async def idle(self) -> None:
        """Wait until no job of a thread is left running."""
        await asyncio.wait_for(self._idle.wait(), timeout=PATIENCE)


@contextlib.contextmanager
def watch_threads() -> Iterator[ThreadWatch]:
    """Make a ``ThreadWatch`` the running loop's default executor for the test."""
    loop = asyncio.get_running_loop()
    watch = ThreadWatch(loop)
    loop.set_default_executor(watch)
    try:
        yield watch
    finally:
        watch.shutdown(wait=True)


async def step(task: asyncio.Future[object], threads: ThreadWatch) -> None:
    """
    Let *task* run one step: one loop iteration while it runs in the event loop; while it
    only waits on a thread, until that thread has finished (then one iteration to deliver
    the result).
    """
    while threads.busy and not task.done():
        await threads.idle()
    await asyncio.sleep(0)


async def _collect(iterator: AsyncIterator[bx.ProductImage]) -> list[bx.ProductImage]:
    return [item async for item in iterator]


async def _delete(client: bx.BitrixClient, portal: FakePortal, _: Path) -> object:
    stored = portal.catalog.add_image(1, name="doomed.png", content=PNG)
    await client.images.delete(1, stored.id)
    return None


async def _download(client: bx.BitrixClient, portal: FakePortal, tmp: Path) -> object:
    image = await client.images.get(1, 1)
    return await client.images.download(image, tmp)


OPS: dict[str, Op] = {
    "list": lambda c, p, t: _collect(c.images.list(1)),
    "list_many": lambda c, p, t: _collect(c.images.list_many(range(1, 121))),
    "get": lambda c, p, t: c.images.get(1, 1),
    "add": lambda c, p, t: c.images.add(1, PNG, name="new.png"),
    "delete": _delete,
    "fields": lambda c, p, t: c.images.fields(),
    "download": _download,
    "mirror": lambda c, p, t: mirror(c, range(1, 4), t / "mirror", warnings=io.StringIO()),
    "call": lambda c, p, t: c.call("catalog.productImage.list", {"productId": 1}),
    "paginate": lambda c, p, t: _collect(
        c.paginate("catalog.product.list", {"filter": {"iblockId": 14}}, key="products")
    ),
}
# Where the slow-answer test makes each operation wait.
SLOW_METHOD = {
    "list": "catalog.productImage.list",
    "list_many": "batch",
    "get": "catalog.productImage.get",
    "add": "catalog.productImage.add",
    "delete": "catalog.productImage.delete",
    "fields": "catalog.productImage.getFields",
    "download": "download",
    "mirror": "download",
    "call": "catalog.productImage.list",
    "paginate": "catalog.product.list",
}


def _client_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks started since *before* that are the client's (the portal's server tasks live as
    long as the keep-alive connections they serve, and are not the client's to end)."""
    current = asyncio.current_task()
    alive = set()
    for task in asyncio.all_tasks() - before:
        code = getattr(task.get_coro(), "cr_code", None)
        server = code is not None and "/aiohttp/web_" in code.co_filename
        if task is not current and not task.done() and not server:
            alive.add(task)
    return alive


async def _wait_until(done: Callable[[], bool]) -> None:
    """Poll *done* until it holds, for at most PATIENCE seconds (then the assert says what)."""
    with contextlib.suppress(asyncio.TimeoutError):  # asyncio's, not the builtin, on 3.10

        async def poll() -> None:
            while not done():
                await asyncio.sleep(0.005)

        await asyncio.wait_for(poll(), timeout=PATIENCE)


async def assert_clean(
    client: bx.BitrixClient,
    portal: FakePortal,
    tmp: Path,
    before: set[asyncio.Task[Any]],
    threads: ThreadWatch | None = None,
) -> None:
    """Nothing of a cancelled call is left behind."""
    # A cancelled async generator is closed a few iterations later.
    await _wait_until(lambda: not _client_tasks(before))
    assert {repr(t.get_coro()) for t in _client_tasks(before)} == set()
    assert idle(client)
    await settle(portal, timeout=PATIENCE)
    # A download cancelled during its final write leaves that write to its thread, which
    # may create the temporary file after the cancel (see
    # test_a_cancelled_download_does_not_write_afterwards): wait for the thread to end.
    if threads is not None:
        await threads.idle()
    await _wait_until(lambda: not partial_files(tmp))
    assert partial_files(tmp) == []


@pytest.mark.parametrize("name", list(OPS))
async def test_cancel_at_every_await_point(name: str, tmp_path: Path, secret_watch: Any) -> None:
    op = OPS[name]
    async with FakePortal(products=120, images_per_product=2, rate=None) as portal:
        async with webhook_client(portal) as client:
            cancelled = 0
            with watch_threads() as threads:
                # Ends when the call completes on its own: a call that never does hangs, and
                # faulthandler_timeout then prints where.
                for count in steps():
                    before = asyncio.all_tasks()
                    task = asyncio.ensure_future(op(client, portal, tmp_path))
                    for _ in itertools.repeat(None, count):
                        if task.done():
                            break
                        await step(task, threads)
                    if task.done():
                        secret_watch.check(task.exception())
                        assert task.exception() is None
                        break
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    cancelled += 1
                    await assert_clean(client, portal, tmp_path, before, threads)
            assert cancelled >= 3
            print(f"{name}: cancelled at {cancelled} points, completed after {count} steps")
            # The client is not poisoned by what it went through.
            assert (await client.images.get(2, 3)).id == 3
        assert portal.counters.in_flight == 0


@pytest.mark.parametrize("name", list(OPS))
async def test_cancel_while_the_answer_is_late(name: str, tmp_path: Path) -> None:
    async with FakePortal(products=4, images_per_product=2, rate=None) as portal:
        async with webhook_client(portal) as client:
            if name in ("download", "mirror"):
                # Fetch the image metadata first; only the file answer is late.
                image = await client.images.get(1, 1)
                op: Op = (
                    (lambda c, p, t: c.images.download(image, t))
                    if name == "download"
                    else OPS[name]
                )
            else:
                op = OPS[name]
            late = portal.inject("delay", delay=0.4, method=SLOW_METHOD[name])
            before = asyncio.all_tasks()
            task = asyncio.ensure_future(op(client, portal, tmp_path))
            # Until the late request is at the portal (its fault used up); the cancel below
            # follows with no await in between, so its answer cannot be in yet.
            await _wait_until(lambda: late.times == 0)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=PATIENCE)
            await assert_clean(client, portal, tmp_path, before)
            assert (await client.images.fields())["id"].is_read_only


async def test_a_cancelled_download_does_not_write_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bitrix_images._net import committer as _committer

    original = _committer.write_out
    in_thread = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_commit(spool: Any) -> int:
        loop.call_soon_threadsafe(in_thread.set)
        time.sleep(0.2)  # a slow disk: the thread is still to write when the cancel comes
        return original(spool)

    monkeypatch.setattr(_committer, "write_out", slow_commit)
    async with FakePortal(products=2, rate=None) as portal:
        async with webhook_client(portal) as client:
            image = await client.images.get(1, 1)
            with watch_threads() as threads:
                task = asyncio.ensure_future(client.images.download(image, tmp_path))
                await asyncio.wait_for(in_thread.wait(), timeout=PATIENCE)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                right_after = sorted(p.name for p in tmp_path.iterdir())
                await threads.idle()  # the commit thread has ended, whatever it did
            later = sorted(p.name for p in tmp_path.iterdir())
            assert later == right_after


async def test_cancel_during_a_backoff_wait(tmp_path: Path) -> None:
    # An OPERATION_TIME_LIMIT without a known reset waits max_delay: ten minutes here, so a
    # call that ends within PATIENCE was cancelled in its wait, however slow the machine.
    slow = bx.RetryPolicy(initial_delay=0.001, max_delay=600.0, max_wait=3600.0)
    async with FakePortal(products=4, rate=None) as portal:
        async with webhook_client(portal, retry=slow) as client:
            for name in ("get", "add", "list_many", "download"):
                if name == "download":
                    image = await client.images.get(1, 1)
                portal.inject("error", status=429, body=OPERATION_TIME_LIMIT)
                before = asyncio.all_tasks()
                op = (
                    (lambda c, p, t, image=image: c.images.download(image, t))
                    if name == "download"
                    else OPS[name]
                )
                task = asyncio.ensure_future(op(client, portal, tmp_path))
                while client.stats.retry_wait == 0:  # until the wait has begun
                    await asyncio.sleep(0.005)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=PATIENCE)
                await assert_clean(client, portal, tmp_path, before)
                client.stats.retry_wait = 0.0
            # A 429 is refused before processing: the cancelled add created nothing.
            assert [i.name for i in portal.catalog.images(1)].count("new.png") == 0


async def _cancel_a_refresh(client: bx.BitrixClient, portal: FakePortal, tmp: Path) -> None:
    """Five calls wait on one refresh whose answer is late; cancel them all mid-refresh."""
    portal.expire_access_token()
    portal.inject("delay", delay=0.3, method="oauth.token")
    before = asyncio.all_tasks()
    waiting = [asyncio.ensure_future(client.images.get(1, 1)) for _ in range(5)]
    # Until the refresh is at the portal; its late answer cannot come before the cancel
    # below, which follows with no await in between.
    await _wait_until(lambda: portal.counters.by_method["oauth.token"] > 0)
    assert portal.counters.by_method["oauth.token"] == 1
    for task in waiting:
        task.cancel()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    await assert_clean(client, portal, tmp, before)


async def test_cancel_during_a_token_refresh_leaves_nothing_behind(tmp_path: Path) -> None:
    async with FakePortal(products=4, rate=None) as portal:
        async with oauth_client(portal) as client:
            await _cancel_a_refresh(client, portal, tmp_path)


async def test_a_refresh_cancelled_in_flight_still_lands(tmp_path: Path) -> None:
    saved: list[bx.OAuthTokens] = []

    async def save(tokens: bx.OAuthTokens) -> None:
        saved.append(tokens)

    async with FakePortal(products=4, rate=None) as portal:
        async with oauth_client(portal, on_token_refresh=save) as client:
            await _cancel_a_refresh(client, portal, tmp_path)
            assert portal.counters.refreshes == 1  # the portal rotated the tokens
            image = await client.images.get(1, 1)
            assert image.id == 1
            assert [t.refresh_token for t in saved] == [portal.refresh_token]


async def test_cancel_a_consumer_of_list_many_between_images(tmp_path: Path) -> None:
    """A consumer cancelled while it awaits something else (not list_many) abandons the
    generator at a yield; its batches in flight must still be stopped."""
    async with FakePortal(products=1000, images_per_product=1, rate=None) as portal:
        portal.inject("delay", times=1000, delay=0.05, method="batch")
        async with webhook_client(portal) as client:
            before = asyncio.all_tasks()
            started = asyncio.Event()

            async def consume() -> None:
                async for _image in client.images.list_many(range(1, 1001)):
                    started.set()
                    await asyncio.sleep(10)  # the consumer's own slow work

            task = asyncio.ensure_future(consume())
            await started.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await assert_clean(client, portal, tmp_path, before)
            sent = portal.counters.by_method["batch"]
            await asyncio.sleep(0.2)
            assert portal.counters.by_method["batch"] == sent  # nothing more went out
            portal.clear_faults()


async def test_a_client_closed_while_calls_run(tmp_path: Path) -> None:
    async with FakePortal(products=4, rate=None) as portal:
        portal.inject("delay", times=3, delay=0.3)
        client = webhook_client(portal)
        calls = [asyncio.ensure_future(client.images.get(1, 1)) for _ in range(3)]
        await asyncio.sleep(0.05)
        await client.close()
        results = await asyncio.gather(*calls, return_exceptions=True)
        # Closing under running calls ends them with an error, never a hang or a success
        # on a closed pool.
        assert all(
            isinstance(r, (bx.BitrixError, RuntimeError, asyncio.CancelledError)) for r in results
        ), results
        await settle(portal)
        with pytest.raises(RuntimeError, match="closed"):
            await client.images.get(1, 1)
