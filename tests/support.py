"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import bitrix_images as bx
from bitrix_images.testing import FakePortal

T = TypeVar("T")

# Production delays are seconds; tests keep the same logic with milliseconds.
FAST_RETRY = bx.RetryPolicy(max_attempts=6, initial_delay=0.001, max_delay=0.01, max_wait=10.0)
UNLIMITED = bx.RateLimit(rate=math.inf)


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
