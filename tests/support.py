"""
What the tests share (fixtures live in conftest.py): fast clients, the test image, the
checks that a call left nothing behind, a portal in a process or a thread, the command
line run in-process, and the raw HTTP helpers of the embedded-portal tests. Everything here
uses the SDK's public surface.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yarl

import bitrix_images as bx
from bitrix_images import cli
from bitrix_images.testing import FakePortal

T = TypeVar("T")

# Production delays are seconds; tests keep the same logic with milliseconds.
FAST_RETRY = bx.RetryPolicy(max_attempts=6, initial_delay=0.001, max_delay=0.01, max_wait=10.0)
UNLIMITED = bx.RateLimit(rate=math.inf)
# The smallest bytes both the SDK and the portal take for a PNG image.
# A PNG's signature and IHDR chunk (1x1, RGBA): the header the image check parses.
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + bytes((0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0))
PNG = PNG_HEAD + bytes(24)


def examples(full: int) -> int:
    """How many examples a property test draws: *full*, scaled by BITRIX_IMAGES_TEST_EXAMPLES.

    .ci/test-matrix sets the scale to 0.25 on the versions it runs beside the coverage run: the
    same properties hold on every Python, and the wide search runs once.
    """
    scale = float(os.environ.get("BITRIX_IMAGES_TEST_EXAMPLES", "1"))
    return max(10, round(full * scale))


# --- clients ---------------------------------------------------------------------------------


def webhook_client(portal: FakePortal, **options: object) -> bx.BitrixClient:
    """A webhook client for *portal* with millisecond retries and no client-side bucket."""
    settings: dict[str, object] = {"retry": FAST_RETRY, "rate_limit": UNLIMITED}
    settings.update(options)
    return bx.BitrixClient.from_webhook(portal.webhook_url, **settings)  # type: ignore[arg-type]


def secrets_of(portal: FakePortal) -> set[str]:
    """A portal's credentials: none may appear in logs, messages or reprs."""
    return {portal.webhook_code, portal.access_token, portal.refresh_token, portal.client_secret}


def oauth_client(portal: FakePortal, **kwargs: object) -> bx.BitrixClient:
    """An OAuth client for *portal* with fast retries."""
    options: dict[str, object] = {"retry": FAST_RETRY, "rate_limit": UNLIMITED}
    options.update(kwargs)
    return bx.BitrixClient.from_oauth(
        portal.client_endpoint,
        access_token=portal.access_token,
        refresh_token=portal.refresh_token,
        client_id=portal.client_id,
        client_secret=portal.client_secret,
        oauth_url=portal.oauth_url,
        **options,  # type: ignore[arg-type]
    )


# --- what a call leaves behind ----------------------------------------------------------------


def idle(client: bx.BitrixClient) -> bool:
    """Whether the client has no request on the wire (every connection given back)."""
    return client.stats.in_flight == 0


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


# --- portals in a process or a thread ---------------------------------------------------------


@contextlib.asynccontextmanager
async def portal_process(*args: str) -> AsyncIterator[str]:
    """Run ``python -m bitrix_images.testing`` in its own process; yield its webhook URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bitrix_images.testing",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        yield line.decode().strip()
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


class ThreadPortal:
    """A FakePortal served from its own event loop in a background thread."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        options.setdefault("rate", None)
        options.setdefault("products", 5)

        async def start() -> FakePortal:
            portal = FakePortal(**options)
            await portal.start()
            return portal

        self.portal = self.run(start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain function on the portal's loop (its state is not thread-safe)."""

        async def wrapper() -> T:
            return function(*args, **kwargs)

        return self.run(wrapper())

    @property
    def url(self) -> str:
        return str(self.portal.webhook_url)

    def close(self) -> None:
        self.run(self.portal.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


# --- the command line, in-process --------------------------------------------------------------

# The variables from which the command line takes a portal: a test starts without them.
CLI_ENV = (cli.WEBHOOK_ENV, *cli.OAUTH_ENV, cli.OAUTH_URL_ENV, cli.REDIS_ENV)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``bitrix-images ARGV`` in this process: its exit status, its stdout and stderr."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *secrets: str) -> str:
    """*err* is one ``bitrix-images: error:`` line, with none of *secrets*; return it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bitrix-images: error: "), err
    assert "Traceback" not in err
    for secret in secrets:
        assert secret not in err
    return lines[0]


# --- raw HTTP for the embedded-portal tests -----------------------------------------------------


class FakeClock:
    """A settable clock for the portal's limits and token expiry."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _decode(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    text = await response.text()
    return response.status, json.loads(text)


async def call(
    session: aiohttp.ClientSession, url: yarl.URL | str, payload: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    """POST ``payload`` as JSON; return (status, decoded body)."""
    async with session.post(url, json=payload if payload is not None else {}, **kwargs) as r:
        return await _decode(r)


async def post_form(
    session: aiohttp.ClientSession, url: yarl.URL | str, body: str, **kwargs: Any
) -> tuple[int, Any]:
    """POST a raw ``application/x-www-form-urlencoded`` body."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with session.post(url, data=body.encode(), headers=headers, **kwargs) as r:
        return await _decode(r)


async def get(
    session: aiohttp.ClientSession, url: yarl.URL | str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as r:
        return await _decode(r)


def ndjson(out: str) -> list[dict[str, Any]]:
    """Each line of *out* as a JSON object."""
    return [json.loads(line) for line in out.splitlines()]


def oauth_env(monkeypatch: pytest.MonkeyPatch, portal: FakePortal) -> None:
    """The ``BITRIX_*`` OAuth variables for the command line, from *portal*."""
    monkeypatch.setenv("BITRIX_CLIENT_ENDPOINT", str(portal.client_endpoint))
    monkeypatch.setenv("BITRIX_ACCESS_TOKEN", portal.access_token)
    monkeypatch.setenv("BITRIX_REFRESH_TOKEN", portal.refresh_token)
    monkeypatch.setenv("BITRIX_CLIENT_ID", portal.client_id)
    monkeypatch.setenv("BITRIX_CLIENT_SECRET", portal.client_secret)
    monkeypatch.setenv("BITRIX_OAUTH_URL", str(portal.oauth_url))


class Terminal(io.StringIO):
    """A text stream that says it is a terminal: where the progress bar draws itself."""

    def isatty(self) -> bool:
        return True
