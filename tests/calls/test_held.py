"""``ClientStats.held``: the wall-clock time requests were held back, not the sum of waits."""

from __future__ import annotations

import asyncio
import time

from support import FAST_RETRY

import bitrix_images as bx
from bitrix_images.testing import FakePortal, instant_retries


async def test_waits_together_count_once() -> None:
    stats = bx.ClientStats()
    started = time.monotonic()
    with instant_retries() as instant:
        with stats.holding():
            await instant.sleep(1.0)
            with stats.holding():  # a second request waits beside the first
                await instant.sleep(2.0)
                assert stats.held == 0.0  # counted when the last wait ends
                assert 3.0 <= stats.held_now() <= 3.0 + time.monotonic() - started
            await instant.sleep(0.5)
        await instant.sleep(10.0)  # nobody waits: not held
        with stats.holding():
            await instant.sleep(0.25)
    # The instant clock runs on the real one, moved on by the sleeps.
    assert 3.75 <= stats.held <= 3.75 + time.monotonic() - started
    assert stats.held_now() == stats.held
    assert "_waiting" not in repr(stats)


async def test_a_wait_that_raises_still_ends() -> None:
    stats = bx.ClientStats()
    started = time.monotonic()
    with instant_retries() as instant:
        try:
            with stats.holding():
                await instant.sleep(1.0)
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            pass
        await instant.sleep(5.0)
    assert 1.0 <= stats.held <= 1.0 + time.monotonic() - started


async def test_concurrent_requests_held_by_the_bucket() -> None:
    async with FakePortal(products=2, rate=None) as portal:
        # One request every 0.2 s: six sent at once wait 0.2, 0.4, ... 1.2 s, together.
        limits = bx.RateLimit(rate=5.0, burst=1)
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=limits
        ) as client:
            await client.images.get(1, 1)  # the method's cost learnt: the rest go at once
            started = time.monotonic()
            await asyncio.gather(*(client.images.get(1, 1) for _ in range(6)))
            elapsed = time.monotonic() - started
            stats = client.stats
    assert 0 < stats.held <= elapsed
    # The summed figure counts each overlapping wait again; the held one does not.
    assert stats.held < stats.throttle_wait
