"""
Four real OS processes, one portal, one Redis: the coordinator across process boundaries.

Each worker (tests/coordinated_worker.py) lists a disjoint range of products with
``list_many`` and prints what it got. The portal runs here, so its counters say what it
saw; every wait is on an event (a counter reaching a value, a process ending) with a
generous limit, never on elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_server import RedisServer, running_redis

from bitrix_images._coordinator import Keys, fingerprint, oauth_credential
from bitrix_images.testing import FakePortal

WORKER = Path(__file__).parent.parent / "coordinated_worker.py"
LIMIT = 180.0  # seconds any one wait may take on a loaded machine before the test fails
# Retries patient enough to outlast 503 storms and a Redis restart, quick to come back.
RETRY = {"max_attempts": 60, "initial_delay": 0.02, "max_delay": 0.5, "max_wait": 150.0}
# The portal drains 10/s with a burst of 20. The clients book a burst of 10: the slots kept
# back absorb the jitter between a booking in Redis and the request's arrival at the portal,
# which on a loaded machine can reach several intervals.
RATE, BURST = 10.0, 10


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    return "p" + uuid.uuid4().hex[:12]


class Worker:
    """One worker process: started, released, finished."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = {"rate": RATE, "burst": BURST, "retry": RETRY, "ready": True, **config}
        self.process: asyncio.subprocess.Process | None = None
        self.stderr = ""

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            json.dumps(self.config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), LIMIT)
        assert line.strip() == b"ready", line

    def release(self) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def finish(self) -> dict[str, Any]:
        assert self.process is not None
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), LIMIT)
        self.stderr = stderr.decode()
        assert self.process.returncode == 0, self.stderr
        result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
        return result


async def run_all(workers: list[Worker]) -> list[dict[str, Any]]:
    """Start every worker, release them together, and collect their results."""
    await asyncio.gather(*(w.start() for w in workers))
    for worker in workers:
        worker.release()
    return list(await asyncio.gather(*(w.finish() for w in workers)))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for *condition* with a generous limit (polled: the portal runs on this loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIMIT
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def ranges(products: int, workers: int = 4) -> list[list[int]]:
    share = products // workers
    return [[1 + k * share, (k + 1) * share] for k in range(workers)]


def expected_images(portal: FakePortal, first: int, last: int) -> Counter[int]:
    return Counter(r.id for p in range(first, last + 1) for r in portal.catalog.records(p))


def assert_every_image_once(
    portal: FakePortal, products: int, results: list[dict[str, Any]]
) -> None:
    got = Counter(i for result in results for i in result["images"])
    assert got == expected_images(portal, 1, products)
    assert [r["error"] for r in results] == [None] * len(results)


def oauth_config(portal: FakePortal) -> dict[str, Any]:
    return {
        "oauth": {
            "client_endpoint": str(portal.client_endpoint),
            "access_token": portal.access_token,
            "refresh_token": portal.refresh_token,
            "client_id": portal.client_id,
            "client_secret": portal.client_secret,
            "oauth_url": str(portal.oauth_url),
        }
    }


async def stored_pair(
    url: str, namespace: str, portal: FakePortal, config: dict[str, Any]
) -> tuple[str, str]:
    """The current pair of the grant whose first refresh token *config* gave."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    keys = Keys.of(namespace, portal.origin, oauth_credential(portal.client_id))
    grant = keys.grant(fingerprint(config["oauth"]["refresh_token"]))
    stored = await client.hgetall(grant)  # type: ignore[misc]
    await client.aclose()
    return stored.get("access_token"), stored.get("refresh_token")


@pytest.fixture
async def listing_portal() -> AsyncIterator[FakePortal]:
    # 32 batches of 50 products: 12 more than the portal's burst.
    async with FakePortal(
        products=1600, images_per_product=1, rate=RATE, burst=20, operating_limit=None
    ) as portal:
        yield portal


async def test_four_processes_share_the_portals_bucket(
    listing_portal: FakePortal, redis_server: RedisServer, namespace: str
) -> None:
    portal = listing_portal
    common = {"webhook": str(portal.webhook_url), "redis": redis_server.url}
    results = await run_all(
        [Worker({**common, "namespace": namespace, "products": r}) for r in ranges(1600)]
    )
    assert_every_image_once(portal, 1600, results)
    assert portal.counters.rate_limited == 0
    assert portal.counters.by_method["batch"] == 32  # no request was refused and resent
    assert sum(r["stats"]["coordinator_fallbacks"] for r in results) == 0


async def test_without_the_coordinator_the_portal_refuses() -> None:
    # The same four processes, each keeping to the portal's rate on its own: together they
    # send four times what it drains. One cheap call per product (four at a time in each
    # process) makes the bucket, not how fast a loaded machine serves 50-product batches,
    # what bounds them, so the overrun shows on any machine.
    async with FakePortal(
        products=80, images_per_product=1, rate=RATE, burst=20, operating_limit=None
    ) as portal:
        common = {"webhook": str(portal.webhook_url), "redis": None, "each": True}
        results = await run_all([Worker({**common, "products": r}) for r in ranges(80)])
        assert_every_image_once(portal, 80, results)  # the 503s were retried...
        assert portal.counters.rate_limited > 0  # ...but each process alone kept to the limit
        assert portal.counters.requests == 80 + portal.counters.rate_limited


async def test_four_processes_refresh_one_oauth_token_once(
    redis_server: RedisServer, namespace: str
) -> None:
    async with FakePortal(
        products=800, images_per_product=1, rate=RATE, burst=20, operating_limit=None
    ) as portal:
        common = {**oauth_config(portal), "redis": redis_server.url, "namespace": namespace}
        workers = [Worker({**common, "products": r}) for r in ranges(800)]
        await asyncio.gather(*(w.start() for w in workers))
        portal.expire_token_after(requests=6)  # mid-run: 16 batches in all
        for worker in workers:
            worker.release()
        results = [await w.finish() for w in workers]
        assert_every_image_once(portal, 800, results)
        assert portal.counters.by_method["oauth.token"] == 1
        assert portal.counters.refreshes == 1
        assert sum(r["stats"]["refreshes"] for r in results) == 1
        assert portal.counters.by_status[401] >= 1  # the token did expire mid-run
        assert await stored_pair(redis_server.url, namespace, portal, common) == (
            portal.access_token,
            portal.refresh_token,
        )


async def test_a_redis_restart_mid_run(namespace: str) -> None:
    server = RedisServer()
    server.start()
    try:
        async with FakePortal(
            products=1600, images_per_product=1, rate=RATE, burst=20, operating_limit=None
        ) as portal:
            common = {**oauth_config(portal), "redis": server.url, "namespace": namespace}
            workers = [Worker({**common, "products": r}) for r in ranges(1600)]
            await asyncio.gather(*(w.start() for w in workers))
            for worker in workers:
                worker.release()
            await until(lambda: portal.counters.requests >= 8, "the workers to get going")
            server.stop()
            # The token expires while Redis is down: nobody may refresh it without the lock.
            portal.expire_token_after(requests=2)
            await until(lambda: portal.counters.by_status[401] >= 1, "an expired token")
            refreshes_while_down = portal.counters.by_method["oauth.token"]
            server.start()  # empty: persistence is off
            results = [await w.finish() for w in workers]
        assert refreshes_while_down == 0
        assert_every_image_once(portal, 1600, results)
        assert portal.counters.by_method["oauth.token"] == 1
        assert sum(r["stats"]["coordinator_fallbacks"] for r in results) > 0
        logs = "".join(w.stderr for w in workers)
        assert "Redis is unreachable" in logs
        assert "Redis answers again" in logs
        assert await stored_pair(server.url, namespace, portal, common) == (
            portal.access_token,
            portal.refresh_token,
        )
    finally:
        server.close()


async def test_a_lock_holder_killed_mid_refresh(redis_server: RedisServer, namespace: str) -> None:
    async with FakePortal(
        products=400, images_per_product=1, rate=None, operating_limit=None
    ) as portal:
        common = {
            **oauth_config(portal),
            "redis": redis_server.url,
            "namespace": namespace,
            "lock_ttl": 5.0,
        }
        # The OAuth server hangs on the first refresh: its holder is stuck inside the lock.
        portal.inject("delay", method="oauth.token", delay=3600)
        portal.expire_access_token()
        holder, *others = workers = [Worker({**common, "products": r}) for r in ranges(400)]
        await asyncio.gather(*(w.start() for w in workers))
        holder.release()
        await until(lambda: portal.counters.by_method["oauth.token"] == 1, "the refresh")
        refused = portal.counters.by_status[401]
        for worker in others:
            worker.release()
        # Each of the others is refused too, and finds the lock taken.
        await until(lambda: portal.counters.by_status[401] >= refused + 3, "the others to wait")
        assert holder.process is not None
        holder.process.kill()  # SIGKILL: no cleanup, the lock stays until it expires
        await holder.process.wait()
        results = [await w.finish() for w in others]
        assert Counter(i for r in results for i in r["images"]) == expected_images(portal, 101, 400)
        assert [r["error"] for r in results] == [None] * 3
        assert portal.counters.by_method["oauth.token"] == 2  # the dead one's, then one more
        assert portal.counters.refreshes == 1
        assert await stored_pair(redis_server.url, namespace, portal, common) == (
            portal.access_token,
            portal.refresh_token,
        )
