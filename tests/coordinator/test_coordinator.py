"""
The coordinator's pieces against a real ``redis-server`` (tests/redis_server.py).

Waits are checked on a slow bucket (tens of seconds per request), so the milliseconds a
loaded machine spends between two round trips cannot change what is asserted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis
from redis_server import RedisServer, running_redis
from support import FAST_RETRY, PNG, oauth_client, webhook_client
from yarl import URL

import bitrix_images as bx
from bitrix_images._coordinator import (
    Keys,
    SharedLimits,
    SharedTokens,
    fingerprint,
    oauth_credential,
    webhook_credential,
)
from bitrix_images._coordinator._redis import BACKOFF_FIRST
from bitrix_images._wire.limits import LeakyBucket, RateLimit
from bitrix_images._wire.protocol import TimeInfo
from bitrix_images.testing import QUERY_LIMIT_EXCEEDED, FakePortal, instant_retries

ORIGIN = URL("http://127.0.0.1:8123")
SLOW = RateLimit(rate=0.01, burst=5)  # a request every 100 s: waits far above any stall


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]  # each test its own keys on the shared server


@pytest.fixture
async def coordinators(redis_url: str, namespace: str) -> AsyncIterator[list[bx.RedisCoordinator]]:
    """Two coordinators on two connections: two processes, as far as Redis can tell."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    yield [bx.RedisCoordinator(c, namespace=namespace, lock_ttl=2.0) for c in clients]
    for client in clients:
        await client.aclose()


def limits_of(coordinator: bx.RedisCoordinator, rate: RateLimit = SLOW) -> SharedLimits:
    return SharedLimits(
        coordinator.link(ORIGIN, webhook_credential("code")),
        rate,
        LeakyBucket(rate.rate, rate.burst),
        hold=75.0,
    )


def pair(n: int) -> bx.OAuthTokens:
    return bx.OAuthTokens(
        access_token=f"access-{n}",
        refresh_token=f"refresh-{n}",
        expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc) + timedelta(hours=n),
        client_endpoint=ORIGIN / "rest/",
    )


def test_importing_the_package_does_not_import_redis() -> None:
    code = "import sys, bitrix_images; assert 'redis' not in sys.modules, 'redis imported'"
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603 -- our own argv


def test_keys_name_portal_and_credential_without_a_secret() -> None:
    keys = Keys.of("ns", URL("https://example.bitrix24.com"), webhook_credential("s3cr3t"))
    assert "s3cr3t" not in keys.prefix
    assert keys.prefix.startswith("ns:{example.bitrix24.com}:webhook-")
    # One bucket per portal, whatever the credential (limits.md); the rest per credential.
    assert keys.bucket == "ns:{example.bitrix24.com}:bucket"
    assert keys.operating("Catalog.ProductImage.List").endswith(":op:catalog.productimage.list")
    other = Keys.of("ns", ORIGIN, oauth_credential("local.app {x}"))
    assert other.prefix == "ns:{127.0.0.1:8123}:oauth-local.app__x_"
    assert other.bucket == Keys.of("ns", ORIGIN, webhook_credential("code")).bucket
    assert other.grant("g") != other.lock("g") != other.alias("g")
    assert fingerprint("s3cr3t") not in ("s3cr3t", fingerprint("s3cr3t2"))
    assert len(fingerprint("s3cr3t")) == 24


def test_coordinator_checks_its_arguments(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    with pytest.raises(TypeError):
        bx.RedisCoordinator("redis://localhost")  # type: ignore[arg-type]
    for bad in ("", "a b", "{x}", 5):
        with pytest.raises(ValueError, match="namespace"):
            bx.RedisCoordinator(client, namespace=bad)  # type: ignore[arg-type]
    for name in ("timeout", "lock_ttl"):
        for value in (0, -1.0, float("inf"), True, "1"):
            with pytest.raises(ValueError, match=name):
                bx.RedisCoordinator(client, **{name: value})  # type: ignore[arg-type]
    assert repr(bx.RedisCoordinator(client, namespace="n")) == "RedisCoordinator(namespace='n')"


async def test_processes_share_one_bucket(coordinators: list[bx.RedisCoordinator]) -> None:
    first, second = (limits_of(c) for c in coordinators)
    waits = []
    for n in range(7):
        pacing = await (first if n % 2 else second).pace(("catalog.productImage.list",))
        assert pacing.reason == "bucket"
        waits.append(pacing.wait)
    # The local bucket's rule, across both: one slot kept back, then one per interval.
    assert waits[:4] == [0.0] * 4
    assert waits[4:] == pytest.approx([100.0, 200.0, 300.0], abs=5.0)
    assert first.fallbacks == second.fallbacks == 0


async def test_a_refusal_fills_the_shared_bucket(coordinators: list[bx.RedisCoordinator]) -> None:
    first, second = (limits_of(c) for c in coordinators)
    await first.flush()  # nothing to tell
    first.penalize()
    await first.flush()
    assert (await second.pace(("m",))).wait == pytest.approx(100.0, abs=5.0)
    second.penalize()  # told with the next booking
    assert (await second.pace(("m",))).wait == pytest.approx(200.0, abs=5.0)


async def test_an_unlimited_bucket_never_waits(coordinators: list[bx.RedisCoordinator]) -> None:
    shared = limits_of(coordinators[0], RateLimit(rate=float("inf")))
    assert [(await shared.pace(("m",))).wait for _ in range(100)] == [0.0] * 100


async def test_processes_share_the_operating_budget(
    coordinators: list[bx.RedisCoordinator],
) -> None:
    first, second = (limits_of(c, RateLimit(rate=1000, burst=1000)) for c in coordinators)
    now = float((await coordinators[0].redis.time())[0])
    # Nothing reported yet: nothing to reserve (downloads never have a report).
    assert (await first.pace(["batch", "M"])).ticket is None
    await first.settle(None, {"m": TimeInfo(operating=440.0, operating_reset_at=now + 100)})
    pacing = await second.pace(["m"])
    assert pacing.reason == "operating"
    assert pacing.ticket is None
    assert pacing.wait == pytest.approx(101.0, abs=5.0)  # one more second: reset_at is whole
    assert (await second.pace(["other"])).reason == "bucket"
    # A report without a reset time gives nothing to wait for, as in the local budget.
    await first.settle(None, {"m": TimeInfo(operating=470.0)})
    assert (await second.pace(["m"])).wait == 0.0


async def test_reservations_count_towards_the_budget(
    coordinators: list[bx.RedisCoordinator],
) -> None:
    first, second = (limits_of(c, RateLimit(rate=1000, burst=1000)) for c in coordinators)
    now = float((await coordinators[0].redis.time())[0])
    ticket = (await first.pace(["m"])).ticket
    # 420 s reported, 5 s a call learned: 432 is reached with two more calls in flight.
    info = TimeInfo(processing=5.0, operating=420.0, operating_reset_at=now + 100)
    await first.settle(ticket, {"m": info})
    held = [await first.pace(["m"]), await second.pace(["m"])]
    assert [p.reason for p in held] == ["bucket", "bucket"]
    assert (await second.pace(["m"])).reason == "operating"
    for pacing in held:  # answers without a time block settle their reservations too
        assert pacing.ticket is not None
        await second.settle(pacing.ticket, {"m": None})
    assert (await second.pace(["m"])).reason == "bucket"


async def test_redis_reserves_what_a_batch_costs(
    coordinators: list[bx.RedisCoordinator], namespace: str
) -> None:
    # A reservation in Redis must hold what the request costs: for a batch, its fifty
    # commands together, as the client's budget learns from the figures. A command's own
    # ``processing`` (what the answer carries per command) is a fiftieth of it, and other
    # processes would send fifty times too much (issue 24: refusals with two processes).
    limit = RateLimit(rate=float("inf"), operating_limit=1.5, operating_window=6.0)
    async with FakePortal(
        products=100,
        images_per_product=1,
        rate=None,
        operating_limit=1.5,
        operating_window=6.0,
        operating_cost={"catalog.productImage.list": 0.003},
    ) as portal:
        async with webhook_client(portal, rate_limit=limit, coordinator=coordinators[0]) as c:
            assert len([image async for image in c.images.list_many(range(1, 101))]) == 100
    redis = coordinators[0].redis
    [key] = [k async for k in redis.scan_iter(match=f"{namespace}:*:op:catalog.productimage.list")]
    assert float(await redis.hget(key, "cost")) == pytest.approx(50 * 0.003)


async def test_tokens_seed_only_an_empty_store(coordinators: list[bx.RedisCoordinator]) -> None:
    first, second = (
        SharedTokens(c.link(ORIGIN, oauth_credential("app")), ORIGIN) for c in coordinators
    )
    assert await first.load(pair(1)) == pair(1)
    assert await second.load(pair(1)) == pair(1)
    # A pair Redis has not seen is another grant: never replaced by a stored one.
    assert await second.load(pair(0)) == pair(0)
    assert first.lineage == fingerprint("refresh-1") != second.lineage


async def test_a_stored_endpoint_never_moves_the_tokens(
    coordinators: list[bx.RedisCoordinator],
) -> None:
    tokens = SharedTokens(coordinators[0].link(ORIGIN, oauth_credential("app")), ORIGIN)
    elsewhere = bx.OAuthTokens(
        access_token="a",
        refresh_token="r",
        expires_at=pair(1).expires_at,
        client_endpoint=URL("https://evil.example/rest/"),
    )
    await tokens.link.read_tokens(await tokens.link.resolve("refresh-1"), elsewhere)
    loaded = await tokens.load(pair(1))
    assert (loaded.access_token, loaded.client_endpoint) == ("a", pair(1).client_endpoint)


async def test_unusable_stored_tokens_are_ignored(
    coordinators: list[bx.RedisCoordinator],
) -> None:
    tokens = SharedTokens(coordinators[0].link(ORIGIN, oauth_credential("app")), ORIGIN)
    key = tokens.link.keys.grant(fingerprint("refresh-1"))
    redis = coordinators[0].redis
    for fields in (
        {"access_token": "a", "refresh_token": "r", "expires_at": "soon", "client_endpoint": "x"},
        {"access_token": "a", "refresh_token": "r", "expires_at": "1", "client_endpoint": "ftp:"},
        {"access_token": "a"},
    ):
        await redis.delete(key)
        await redis.hset(key, mapping=fields)  # type: ignore[arg-type]
        assert await tokens.load(pair(1)) == pair(1)


async def test_one_refresh_for_many_waiters(coordinators: list[bx.RedisCoordinator]) -> None:
    processes = [
        SharedTokens(c.link(ORIGIN, oauth_credential("app")), ORIGIN) for c in coordinators * 4
    ]
    await processes[0].load(pair(1))
    calls: list[bx.OAuthTokens] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        calls.append(tokens)
        started.set()
        await release.wait()
        return pair(2)

    first = asyncio.ensure_future(processes[0].refresh("access-1", pair(1), run))
    await started.wait()  # the first holds the lock; the others must wait for it
    others = [asyncio.ensure_future(p.refresh("access-1", pair(1), run)) for p in processes[1:]]
    release.set()
    results = await asyncio.gather(first, *others)
    assert calls == [pair(1)]
    assert results[0] == (pair(2), True)
    assert results[1:] == [(pair(2), False)] * 7
    # A process given the grant's first pair later finds the current one.
    assert await processes[5].load(pair(1)) == pair(2)
    lineage = fingerprint("refresh-1")
    assert {p.lineage for p in processes} == {lineage}
    assert await coordinators[0].redis.exists(processes[0].link.keys.lock(lineage)) == 0


async def test_a_waiter_with_an_old_token_takes_the_stored_pair(
    coordinators: list[bx.RedisCoordinator],
) -> None:
    tokens = SharedTokens(coordinators[0].link(ORIGIN, oauth_credential("app")), ORIGIN)
    await tokens.load(pair(3))

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        raise AssertionError("no refresh: Redis holds a newer pair")

    assert await tokens.refresh("access-1", pair(1), run) == (pair(3), False)


async def test_a_failed_refresh_releases_the_lock(
    coordinators: list[bx.RedisCoordinator],
) -> None:
    tokens = SharedTokens(coordinators[0].link(ORIGIN, oauth_credential("app")), ORIGIN)

    async def refused(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        raise bx.AuthError("refused", method="oauth.token")

    with pytest.raises(bx.AuthError):
        await tokens.refresh("access-1", pair(1), refused)
    lock = tokens.link.keys.lock(fingerprint("refresh-1"))
    assert await coordinators[0].redis.exists(lock) == 0

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        return pair(2)

    # Redis was empty: the refresh starts from this process's pair and stores the result.
    assert await tokens.refresh("access-1", pair(1), run) == (pair(2), True)
    assert await tokens.load(pair(1)) == pair(2)


async def test_a_dead_holders_lock_expires(coordinators: list[bx.RedisCoordinator]) -> None:
    tokens = SharedTokens(coordinators[0].link(ORIGIN, oauth_credential("app")), ORIGIN)
    await tokens.load(pair(1))
    # A holder that died: its lock stays until lock_ttl (2 s here) has passed.
    other = coordinators[1].link(ORIGIN, oauth_credential("app"))
    assert await other.try_lock(fingerprint("refresh-1"), "dead")

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        return pair(2)

    assert await tokens.refresh("access-1", pair(1), run) == (pair(2), True)


async def test_the_lock_is_not_waited_for_forever(redis_url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    coordinator = bx.RedisCoordinator(client, namespace=namespace, lock_ttl=0.2)
    tokens = SharedTokens(coordinator.link(ORIGIN, oauth_credential("app")), ORIGIN)
    # A lock that never expires (not one the coordinator would take) outlasts the wait.
    await client.set(tokens.link.keys.lock(fingerprint("refresh-1")), "stuck")

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        raise AssertionError("no refresh without the lock")

    with pytest.raises(bx.CoordinatorUnavailable, match="too long"):
        await tokens.refresh("access-1", pair(1), run)
    await client.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a Redis too slow to wait for."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("kind", ["closed", "silent"])
async def test_limits_fall_back_when_redis_fails(
    kind: str,
    closed_port: int,
    silent_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port if kind == "closed" else silent_port
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    shared = limits_of(bx.RedisCoordinator(client, timeout=0.2))
    with caplog.at_level(logging.WARNING, logger="bitrix_images"):
        waits = [(await shared.pace(["m"])).wait for _ in range(3)]
        shared.penalize()
        await shared.flush()
        await shared.settle("ticket", {"m": TimeInfo(operating=1.0)})
        await shared.settle(None, {"m": None})  # nothing to tell Redis
    # The local bucket starts the outage full: it paces at once.
    assert waits == pytest.approx([100.0, 200.0, 300.0], abs=5.0)
    assert shared.fallbacks == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per outage
    assert "Redis is unreachable" in warnings[0].getMessage()
    await client.aclose()


async def test_sharing_resumes_when_redis_is_back(caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer()
    client = aioredis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=0.5)
    shared = limits_of(bx.RedisCoordinator(client, timeout=1.0))
    try:
        with caplog.at_level(logging.WARNING, logger="bitrix_images"):
            await shared.pace(["m"])
            server.start()
            # The breaker leaves Redis alone for its first back-off after a failure.
            await asyncio.sleep(BACKOFF_FIRST + 0.05)
            await shared.pace(["m"])
            shared.penalize()
            await shared.flush()
            server.stop()
            shared.penalize()
            await shared.flush()
        messages = [r.getMessage() for r in caplog.records]
        assert [m.split(" (")[0].split(":")[0] for m in messages] == [
            "Redis is unreachable",
            "Redis answers again",
            "Redis is unreachable",
        ]
        assert shared.fallbacks == 2
    finally:
        server.close()
        await client.aclose()


async def test_no_refresh_without_redis(closed_port: int, caplog: pytest.LogCaptureFixture) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=closed_port)
    tokens = SharedTokens(bx.RedisCoordinator(client).link(ORIGIN, oauth_credential("a")), ORIGIN)
    with caplog.at_level(logging.WARNING, logger="bitrix_images"):
        assert await tokens.load(pair(1)) == pair(1)
    assert "starting with the tokens given" in caplog.text

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        raise AssertionError("no refresh without the lock")

    with pytest.raises(bx.CoordinatorUnavailable, match="Redis is unreachable") as caught:
        await tokens.refresh("access-1", pair(1), run)
    assert isinstance(caught.value, bx.TransportError)
    await client.aclose()


async def test_a_pair_redis_cannot_store_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer()
    server.start()
    client = aioredis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=0.5)
    tokens = SharedTokens(bx.RedisCoordinator(client).link(ORIGIN, oauth_credential("a")), ORIGIN)

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        server.stop()  # Redis dies while the OAuth server rotates the pair
        return pair(2)

    try:
        with caplog.at_level(logging.ERROR, logger="bitrix_images"):
            assert await tokens.refresh("access-1", pair(1), run) == (pair(2), True)
        assert "were not stored" in caplog.text
    finally:
        server.close()
        await client.aclose()


# --- a client with a coordinator, in this process ---------------------------------------------


async def test_no_refresh_and_no_replay_without_redis(
    portal: FakePortal, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    redis = aioredis.Redis(host="127.0.0.1", port=closed_port)
    coordinator = bx.RedisCoordinator(redis, timeout=0.5)
    async with oauth_client(portal, coordinator=coordinator) as client:
        portal.expire_access_token()
        with pytest.raises(bx.CoordinatorUnavailable, match="Redis is unreachable") as caught:
            await client.images.add(1, PNG, name="a.png")
    assert caught.value.attempts == FAST_RETRY.max_attempts
    assert portal.counters.by_method["oauth.token"] == 0  # never without the lock
    # Sent once and refused with expired_token; then only the refresh was tried again.
    assert portal.counters.by_method["catalog.productimage.add"] == 1
    assert client.stats.coordinator_fallbacks > 0
    assert "Redis is unreachable" in caplog.text
    await redis.aclose()


async def test_a_refusal_holds_back_every_client(
    portal: FakePortal, coordinators: list[bx.RedisCoordinator]
) -> None:
    rate = bx.RateLimit(rate=0.1, burst=10)  # 10 s a request: waits far above any stall
    first = webhook_client(portal, rate_limit=rate, coordinator=coordinators[0])
    second = webhook_client(portal, rate_limit=rate, coordinator=coordinators[1])
    portal.inject("error", status=503, body=QUERY_LIMIT_EXCEEDED)
    async with first, second:
        with instant_retries() as clock:
            await first.images.fields()
            assert first.stats.retries == 1
            await second.images.fields()
    # The first client's refusal filled the shared bucket: its retry waited one interval,
    # and the second client, which had sent nothing, the next one.
    assert first.stats.throttle_wait == pytest.approx(10.0, abs=2.0)
    assert second.stats.throttle_wait == pytest.approx(20.0, abs=2.0)
    assert len(clock.waits) == 3
    assert first.stats.coordinator_fallbacks == second.stats.coordinator_fallbacks == 0


async def test_clients_share_one_oauth_pair(
    portal: FakePortal, coordinators: list[bx.RedisCoordinator]
) -> None:
    saved: list[str] = []

    async def save(tokens: bx.OAuthTokens) -> None:
        saved.append(tokens.access_token)

    first = oauth_client(portal, coordinator=coordinators[0], on_token_refresh=save)
    async with first:
        await first.images.fields()  # seeds Redis with the pair given
        portal.expire_access_token()
        await first.images.fields()
    assert saved == [portal.access_token]
    # A client given the old, dead pair takes the newer one from Redis: no refresh.
    second = oauth_client(portal, coordinator=coordinators[1], on_token_refresh=save)
    async with second:
        await second.images.fields()
    assert second.stats.refreshes == 0
    assert portal.counters.refreshes == 1
    assert saved == [portal.access_token]


async def test_a_client_adopts_a_pair_refreshed_elsewhere(
    portal: FakePortal, coordinators: list[bx.RedisCoordinator]
) -> None:
    first = oauth_client(portal, coordinator=coordinators[0])
    second = oauth_client(portal, coordinator=coordinators[1])
    async with first, second:
        await first.images.fields()
        await second.images.fields()  # both hold the same pair now
        portal.expire_access_token()
        await first.images.fields()  # refreshes
        await second.images.fields()  # refused, finds the new pair in Redis
    assert (first.stats.refreshes, second.stats.refreshes) == (1, 0)
    assert portal.counters.by_method["oauth.token"] == 1


def test_the_coordinator_must_be_one(portal: FakePortal) -> None:
    with pytest.raises(TypeError, match="coordinator"):
        webhook_client(portal, coordinator="redis://localhost")


async def test_a_client_that_decodes_responses_works_too(redis_url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    coordinator = bx.RedisCoordinator(client, namespace=namespace)
    shared = limits_of(coordinator)
    assert (await shared.pace(["m"])).reason == "bucket"
    tokens = SharedTokens(coordinator.link(ORIGIN, oauth_credential("app")), ORIGIN)
    assert await tokens.load(pair(1)) == pair(1)
    assert await tokens.load(pair(1)) == pair(1)
    await client.aclose()


async def test_a_pair_stored_just_before_the_lock_is_taken(
    coordinators: list[bx.RedisCoordinator],
) -> None:
    link = coordinators[0].link(ORIGIN, oauth_credential("app"))
    other = coordinators[1].link(ORIGIN, oauth_credential("app"))

    class Racing(type(link)):  # type: ignore[misc]
        async def try_lock(self, lineage: str, token: str) -> bool:
            taken = await super().try_lock(lineage, token)
            # Another process stores its refreshed pair between our read and our lock.
            await other.store_tokens(lineage, "its-lock", pair(2), None)
            return taken

    tokens = SharedTokens(Racing(link.coordinator, link.keys), ORIGIN)
    await tokens.load(pair(1))

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        raise AssertionError("no refresh: the pair stored meanwhile is newer")

    assert await tokens.refresh("access-1", pair(1), run) == (pair(2), False)
    lock = link.keys.lock(fingerprint("refresh-1"))
    assert await coordinators[0].redis.exists(lock) == 0  # released
