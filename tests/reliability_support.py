"""Helpers of the reliability tests: fast clients, a recording clock, and the checks that a
call left nothing behind (no connection held, no request in flight, no partial file)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable
from pathlib import Path

import aiohttp
from support import FAST_RETRY, UNLIMITED

import bitrix_images as bx
from bitrix_images.testing import FakePortal

# The smallest bytes both the SDK and the portal take for a PNG image.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)


class RecordingSleep:
    """
    A session clock that records every wait the client asks for and sleeps at most *cap*.

    Waits of seconds (OPERATION_TIME_LIMIT resets) become milliseconds, so the tests can
    check *what* the client waited without spending the time.
    """

    def __init__(self, cap: float = 0.005) -> None:
        self.cap = cap
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(min(seconds, self.cap))

    @property
    def total(self) -> float:
        return sum(self.waits)


def webhook_client(portal: FakePortal, **options: object) -> bx.BitrixClient:
    """A webhook client for *portal* with millisecond retries and no client-side bucket."""
    settings: dict[str, object] = {"retry": FAST_RETRY, "rate_limit": UNLIMITED}
    settings.update(options)
    return bx.BitrixClient.from_webhook(portal.webhook_url, **settings)  # type: ignore[arg-type]


def record_sleep(client: bx.BitrixClient, cap: float = 0.005) -> RecordingSleep:
    """Replace the client's clock with a ``RecordingSleep`` and return it."""
    recorder = RecordingSleep(cap)
    client._session._sleep = recorder
    return recorder


def acquired(client: bx.BitrixClient) -> int:
    """Connections the client's pool holds checked out (0 when the client is idle)."""
    pool = client._session._owned
    if pool is None or pool.closed:
        return 0
    connector = pool.connector
    assert isinstance(connector, aiohttp.BaseConnector)
    return len(connector._acquired)


async def settle(portal: FakePortal, timeout: float = 5.0) -> None:
    """Wait until the portal has no request in flight (a late, delayed answer included)."""
    deadline = time.monotonic() + timeout
    while portal.counters.in_flight:
        assert time.monotonic() < deadline, f"{portal.counters.in_flight} requests still running"
        await asyncio.sleep(0.01)


def partial_files(root: Path) -> list[Path]:
    """Temporary download files (``.name.XXXX.part``) left under *root*."""
    return sorted(p for p in root.rglob("*.part"))


def snapshot(portal: FakePortal) -> dict[int, list[tuple[int, str, str, str]]]:
    """Every product's images as the portal stores them: id, name, type and content digest."""
    return {
        pid: [
            (image.id, image.name, image.type, hashlib.sha256(image.content).hexdigest()[:16])
            for image in portal.catalog.images(pid)
        ]
        for pid in portal.catalog.product_ids()
    }


def id_checksum(ids: Iterable[int]) -> tuple[int, int]:
    """An order-sensitive checksum of a sequence of ids, and its length."""
    digest = 0
    count = 0
    for value in ids:
        count += 1
        digest = (digest * 1_000_003 + value) % (1 << 61)
    return count, digest


async def tasks_settle(before: set[asyncio.Task[object]], timeout: float = 2.0) -> set[str]:
    """
    Wait for the tasks started since *before* to finish; return the ones still running.

    A cancelled async generator is closed by the loop a few iterations later, so a leak is
    only a task that is still alive after *timeout*.
    """
    current = asyncio.current_task()
    deadline = time.monotonic() + timeout
    while True:
        alive = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
        if not alive or time.monotonic() > deadline:
            return {repr(t.get_coro()) for t in alive}
        await asyncio.sleep(0.01)
