"""
The coordinator against the findings of its review (issue 18), each with a real
``redis-server``: an OAuth pair belongs to one user's grant, a pair the caller gives never
loses to a dead one, the refresh lock outlives a slow refresh, a wait for another process's
lock ends on SIGINT, a Redis that never answers is skipped, and ``--redis`` is checked.

Nothing here is timed: waits are on events (a counter reaching a value, a process ending)
with generous limits; a slow refresh is slow by the portal's own delay, and the lock's TTL
is compressed through ``lock_ttl``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_server import RedisServer, running_redis
from support import FAST_RETRY, UNLIMITED, ThreadPortal, oauth_env, run_cli, webhook_client
from yarl import URL

import bitrix_images as bx
from bitrix_images import cli
from bitrix_images._coordinator import (
    RedisDown,
    SharedLimits,
    SharedTokens,
    oauth_credential,
    webhook_credential,
)
from bitrix_images._coordinator._cli import RedisUnusable, connect, warnings_to
from bitrix_images._coordinator._redis import BACKOFF_FIRST
from bitrix_images._wire.limits import LeakyBucket
from bitrix_images.testing import FakePortal, instant_retries

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "coordinated_worker.py"
LIMIT = 120.0  # seconds any one wait may take on a loaded machine before the test fails
OTHER_USER = 7


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    return "g" + uuid.uuid4().hex[:12]


@pytest.fixture
async def connections(redis_server: RedisServer) -> AsyncIterator[list[aioredis.Redis]]:
    """Three connections: three processes, as far as Redis can tell."""
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(3)]
    yield clients
    for client in clients:
        await client.aclose()


def client_of(
    portal: FakePortal, tokens: tuple[str, str], coordinator: bx.RedisCoordinator
) -> bx.BitrixClient:
    """An OAuth client of *portal*'s application given the pair *tokens*."""
    access, refresh = tokens
    return bx.BitrixClient.from_oauth(
        portal.client_endpoint,
        access_token=access,
        refresh_token=refresh,
        client_id=portal.client_id,
        client_secret=portal.client_secret,
        oauth_url=portal.oauth_url,
        retry=FAST_RETRY,
        rate_limit=UNLIMITED,
        coordinator=coordinator,
    )


async def until(condition: Any, what: str) -> None:
    """Wait for *condition* with a generous limit (polled: the portal may run on this loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIMIT
    while not await condition() if asyncio.iscoroutinefunction(condition) else not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --- 1. two users of one application on one portal -------------------------------------------


async def test_two_users_of_one_application_keep_their_own_pairs(
    portal: FakePortal, connections: list[aioredis.Redis], namespace: str
) -> None:
    first_user = (portal.access_token, portal.refresh_token)
    other_user = portal.authorize(OTHER_USER)
    first = client_of(portal, first_user, bx.RedisCoordinator(connections[0], namespace=namespace))
    other = client_of(portal, other_user, bx.RedisCoordinator(connections[1], namespace=namespace))
    async with first, other:
        await first.images.fields()  # seeds Redis with the first user's pair
        await other.images.fields()
        await other.images.fields()
        # Both tokens expire: each client refreshes its own user's pair, once.
        portal.expire(portal.access_token)
        portal.expire(other_user[0])
        await asyncio.gather(first.images.fields(), other.images.fields())
        await other.images.fields()
    assert portal.requests_by_user == {portal.user_id: 2, OTHER_USER: 4}
    assert (first.stats.refreshes, other.stats.refreshes) == (1, 1)
    # A third process given the other user's first pair finds that user's current one.
    third = client_of(portal, other_user, bx.RedisCoordinator(connections[2], namespace=namespace))
    async with third:
        await third.images.fields()
    assert portal.requests_by_user[OTHER_USER] == 5
    assert third.stats.refreshes == 0
    assert portal.counters.refreshes == 2


async def test_an_answer_for_another_user_is_never_stored_in_a_grant(
    portal: FakePortal, connections: list[aioredis.Redis], namespace: str
) -> None:
    coordinator = bx.RedisCoordinator(connections[0], namespace=namespace)
    client = client_of(portal, (portal.access_token, portal.refresh_token), coordinator)
    async with client:
        await client.images.fields()
        portal.expire(portal.access_token)
        await client.images.fields()  # the first refresh notes member_id and user_id
        grants = [k async for k in connections[0].scan_iter(match=f"{namespace}:*:grant:*")]
        assert len(grants) == 1
        # As if the grant's record had been written by another user's process.
        await connections[0].hset(grants[0], "user_id", str(OTHER_USER))
        stored = await connections[0].hget(grants[0], "access_token")
        portal.expire(portal.access_token)
        with pytest.raises(bx.AuthError, match="another user"):
            await client.images.fields()
        assert await connections[0].hget(grants[0], "access_token") == stored


# --- 2. re-authorisation after a dead pair ---------------------------------------------------


async def test_a_new_authorisation_wins_over_the_dead_pair_in_redis(
    portal: FakePortal, connections: list[aioredis.Redis], namespace: str
) -> None:
    dead = (portal.access_token, portal.refresh_token)
    old = client_of(portal, dead, bx.RedisCoordinator(connections[0], namespace=namespace))
    async with old:
        await old.images.fields()  # Redis now holds this pair
    # The application is authorised again: the old pair is dead, nothing is deleted in Redis.
    fresh = portal.authorize()
    portal.expire(dead[0])
    new = client_of(portal, fresh, bx.RedisCoordinator(connections[1], namespace=namespace))
    async with new:
        await new.images.fields()
        portal.expire(fresh[0])
        await new.images.fields()  # and its refreshes are its own grant's
    assert portal.counters.by_method["oauth.token"] == 1
    assert new.stats.refreshes == 1


async def test_a_refused_pair_never_wins_again(
    portal: FakePortal, connections: list[aioredis.Redis], namespace: str
) -> None:
    stale = (portal.access_token, portal.refresh_token)
    fresh = portal.authorize()  # the stale pair's refresh token is dead now
    portal.expire(stale[0])
    coordinators = [bx.RedisCoordinator(c, namespace=namespace) for c in connections]
    # Redis was emptied and seeded with the stale pair: its refresh is refused.
    seeded = client_of(portal, stale, coordinators[0])
    async with seeded:
        with pytest.raises(bx.AuthError, match="refused"):
            await seeded.images.fields()
    assert portal.counters.by_method["oauth.token"] == 1
    # Another process given the same stale pair fails at once: no second refusal.
    again = client_of(portal, stale, coordinators[1])
    async with again:
        with pytest.raises(bx.AuthError, match="authorise the application again"):
            await again.images.fields()
    assert portal.counters.by_method["oauth.token"] == 1
    # The fresh pair the caller gives is used, not the refused one Redis holds.
    new = client_of(portal, fresh, coordinators[2])
    async with new:
        await new.images.fields()
        portal.expire(fresh[0])
        await new.images.fields()
    assert new.stats.refreshes == 1
    assert portal.counters.refreshes == 1


# --- 3. a refresh slower than the lock's TTL -------------------------------------------------


async def test_the_lock_outlives_a_refresh_slower_than_its_ttl(
    portal: FakePortal, connections: list[aioredis.Redis], namespace: str
) -> None:
    pair = (portal.access_token, portal.refresh_token)
    # A 2 s lock and an OAuth server that takes 6 s to answer the first refresh (the holder
    # extends its lock every 0.5 s: a stall of 1.5 s would still not lose it).
    first, second = (
        client_of(portal, pair, bx.RedisCoordinator(c, namespace=namespace, lock_ttl=2.0))
        for c in connections[:2]
    )
    async with first, second:
        await first.images.fields()
        await second.images.fields()
        portal.inject("delay", method="oauth.token", delay=6.0)
        portal.expire(portal.access_token)
        holder = asyncio.ensure_future(first.images.fields())
        await until(lambda: portal.counters.by_method["oauth.token"] == 1, "the slow refresh")
        # The second is refused and waits for the lock, past its first TTL: it must not
        # refresh the same token while the first's refresh is still running.
        await asyncio.gather(holder, second.images.fields())
    assert portal.counters.by_method["oauth.token"] == 1
    assert (first.stats.refreshes, second.stats.refreshes) == (1, 0)


# --- 4. SIGINT while waiting for another process's lock --------------------------------------


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


async def test_sigint_ends_a_wait_for_another_process_lock(redis_server: RedisServer) -> None:
    lock_ttl = 60.0
    async with FakePortal(products=5, rate=None, operating_limit=None) as portal:
        oauth = {
            "client_endpoint": str(portal.client_endpoint),
            "access_token": portal.access_token,
            "refresh_token": portal.refresh_token,
            "client_id": portal.client_id,
            "client_secret": portal.client_secret,
            "oauth_url": str(portal.oauth_url),
        }
        config = {
            "oauth": oauth,
            "redis": redis_server.url,
            "namespace": "bitrix_images",  # the command line's
            "lock_ttl": lock_ttl,
            "products": [1, 5],
            "retry": {"max_attempts": 5, "initial_delay": 0.01, "max_delay": 0.1},
        }
        # The holder's refresh hangs: it holds the grant's lock (and beats it) until killed.
        portal.inject("delay", method="oauth.token", delay=3600)
        portal.expire_access_token()
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            json.dumps(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=_subprocess_env(),
        )
        redis = aioredis.Redis.from_url(redis_server.url)
        try:
            await until(lambda: portal.counters.by_method["oauth.token"] == 1, "the holder")
            grant = f"bitrix_images:{{127.0.0.1:{portal.port}*:lock"
            locks = [k async for k in redis.scan_iter(match=grant)]
            assert len(locks) == 1
            held_by = await redis.get(locks[0])
            refused = portal.counters.by_status[401]
            # The waiter: the command line, given the same pair, with the same Redis.
            env = _subprocess_env() | {
                "BITRIX_CLIENT_ENDPOINT": oauth["client_endpoint"],
                "BITRIX_ACCESS_TOKEN": oauth["access_token"],
                "BITRIX_REFRESH_TOKEN": oauth["refresh_token"],
                "BITRIX_CLIENT_ID": oauth["client_id"],
                "BITRIX_CLIENT_SECRET": oauth["client_secret"],
                "BITRIX_OAUTH_URL": oauth["oauth_url"],
                "BITRIX_REDIS_URL": redis_server.url,
            }
            env.pop("BITRIX_WEBHOOK_URL", None)
            waiter = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bitrix_images",
                "fields",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            await until(lambda: portal.counters.by_status[401] > refused, "the waiter's 401")
            # Redis's own count of commands: the waiter polls the lock, the holder beats it
            # once every 15 s. Many more commands: the waiter is in its wait.
            start = (await redis.info("stats"))["total_commands_processed"]

            async def polling() -> bool:
                info = await redis.info("stats")
                return bool(info["total_commands_processed"] > start + 20)

            await until(polling, "the waiter to poll the lock")
            waiter.send_signal(signal.SIGINT)
            _, stderr = await asyncio.wait_for(waiter.communicate(), LIMIT)
            # It ended with SIGINT's status while the holder still held the lock, which its
            # TTL would not have freed: the wait did not run on to its end.
            assert waiter.returncode == 130, stderr.decode()
            assert await redis.get(locks[0]) == held_by
            assert holder.returncode is None
            assert portal.counters.by_method["oauth.token"] == 1
            assert "interrupted" in stderr.decode()
        finally:
            if holder.returncode is None:
                holder.kill()
            await holder.wait()
            await redis.aclose()


# --- 5. a Redis that accepts connections and never answers -----------------------------------


@pytest.fixture
async def silent_redis() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server on loopback that accepts and never answers: (port, [connections])."""
    accepted = [0]
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        writers.append(writer)  # held open, never written to

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port, accepted
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_redis_that_never_answers_is_skipped(
    portal: FakePortal, silent_redis: tuple[int, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    port, accepted = silent_redis
    redis = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1.0)
    coordinator = bx.RedisCoordinator(redis, timeout=0.2)
    requests = 60
    with caplog.at_level(logging.WARNING, logger="bitrix_images"), instant_retries():
        async with webhook_client(portal, coordinator=coordinator) as client:
            for _ in range(requests):
                await client.images.fields()
    assert portal.counters.requests == requests
    # Without the breaker every pace and settle (two a request) tried Redis and waited out
    # its timeout. With it: the first failure, then one probe per back-off (1, 2, 4... s).
    assert 1 <= accepted[0] <= 5
    assert client.stats.coordinator_fallbacks >= requests
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one per outage
    await redis.aclose()


async def test_after_its_back_off_redis_is_tried_again(
    silent_redis: tuple[int, list[int]],
) -> None:
    port, accepted = silent_redis
    silent = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1.0)
    coordinator = bx.RedisCoordinator(silent, timeout=0.2)
    limits = bx.RateLimit(rate=1000, burst=1000)
    shared = SharedLimits(
        coordinator.link(URL("https://example.bitrix24.com"), webhook_credential("code")),
        limits,
        LeakyBucket(limits.rate, limits.burst),
        hold=75.0,
    )
    await shared.pace(["m"])
    await shared.pace(["m"])
    assert (accepted[0], shared.fallbacks) == (1, 2)  # the second did not try Redis
    await asyncio.sleep(BACKOFF_FIRST + 0.05)
    await shared.pace(["m"])
    assert (accepted[0], shared.fallbacks) == (2, 3)  # the probe after the back-off
    await silent.aclose()


# --- 6. --redis on the command line ----------------------------------------------------------


@pytest.fixture
def served() -> Iterator[ThreadPortal]:
    portal = ThreadPortal()
    yield portal
    portal.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (cli.WEBHOOK_ENV, *cli.OAUTH_ENV, cli.OAUTH_URL_ENV, cli.REDIS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_a_mistyped_redis_stops_the_command(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on: a mistyped one
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    wrong = f"redis://:s3cretpass@127.0.0.1:{port}/0"
    code, out, err = run_cli(capsys, "fields", "--webhook", served.url, "--redis", wrong)
    assert (code, out) == (2, "")
    assert err.startswith(f"bitrix-images: error: cannot use the Redis at 127.0.0.1:{port} ")
    assert "s3cretpass" not in err
    assert served.portal.counters.requests == 0


@pytest.mark.usefixtures("clean_env")
def test_redis_warnings_are_the_command_lines_own(
    served: ThreadPortal,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Redis user that may PING but not run scripts: reachable at start, failing after.
    import redis as sync_redis

    admin = sync_redis.Redis.from_url(redis_server.url)
    admin.acl_setuser(
        "pinger", enabled=True, passwords=["+pingpass"], commands=["+ping", "+client", "+hello"]
    )
    admin.close()
    url = f"redis://pinger:pingpass@127.0.0.1:{redis_server.port}/0"
    oauth_env(monkeypatch, served.portal)
    code, out, err = run_cli(capsys, "fields", "--redis", url)
    assert code == 0
    assert out
    lines = err.splitlines()
    assert lines
    assert all(line.startswith("bitrix-images: warning: ") for line in lines), err
    assert "Redis is unreachable" in err
    assert "pingpass" not in err


# --- the pieces, in this process -------------------------------------------------------------


def pair(n: int) -> bx.OAuthTokens:
    return bx.OAuthTokens(
        access_token=f"access-{n}",
        refresh_token=f"refresh-{n}",
        expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc) + timedelta(hours=n),
        client_endpoint=URL("http://127.0.0.1:8123/rest/"),
    )


def shared_tokens(
    connection: aioredis.Redis, namespace: str, *, lock_ttl: float = 30.0, **options: Any
) -> SharedTokens:
    coordinator = bx.RedisCoordinator(connection, namespace=namespace, lock_ttl=lock_ttl)
    origin = URL("http://127.0.0.1:8123")
    return SharedTokens(coordinator.link(origin, oauth_credential("app")), origin, **options)


async def test_a_cancelled_wait_leaves_the_other_process_lock_alone(
    connections: list[aioredis.Redis], namespace: str
) -> None:
    tokens = shared_tokens(connections[0], namespace)
    await tokens.load(pair(1))
    assert tokens.lineage is not None
    lock = tokens.link.keys.lock(tokens.lineage)
    await connections[1].set(lock, "another process")

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        raise AssertionError("no refresh: the lock is taken")

    waiting = asyncio.ensure_future(tokens.refresh("access-1", pair(1), run))
    await until(lambda: tokens.waiting, "the wait for the lock")
    tokens.abandon(waiting)  # what the client's close() does
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not tokens.waiting
    assert await connections[1].get(lock) == b"another process"
    tokens.abandon(waiting)  # nothing to abandon any more
    assert await tokens.load(pair(1)) == pair(1)


async def test_an_abandoned_wait_ends_even_when_its_cancel_is_lost(
    connections: list[aioredis.Redis], namespace: str
) -> None:
    tokens = shared_tokens(connections[0], namespace)
    await tokens.load(pair(1))
    assert tokens.lineage is not None
    await connections[1].set(tokens.link.keys.lock(tokens.lineage), "another process")

    async def run(tokens: bx.OAuthTokens) -> bx.OAuthTokens:
        raise AssertionError("no refresh: the lock is taken")

    waiting = asyncio.ensure_future(tokens.refresh("access-1", pair(1), run))
    await until(lambda: tokens.waiting, "the wait for the lock")
    # As asyncio.wait_for before 3.12 may do: the cancel is swallowed, the flag stays.
    tokens.abandon(asyncio.get_running_loop().create_future())
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_lost_lock_is_told(
    connections: list[aioredis.Redis], namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = shared_tokens(connections[0], namespace, lock_ttl=0.2)
    await tokens.load(pair(1))
    assert tokens.lineage is not None
    lock = tokens.link.keys.lock(tokens.lineage)

    async def run(given: bx.OAuthTokens) -> bx.OAuthTokens:
        await connections[1].delete(lock)  # as if it had expired
        await until(lambda: "expired while the refresh ran" in caplog.text, "the warning")
        return pair(2)

    with caplog.at_level(logging.WARNING, logger="bitrix_images"):
        assert await tokens.refresh("access-1", pair(1), run) == (pair(2), True)
    assert await tokens.load(pair(1)) == pair(2)  # stored all the same


async def test_a_refresh_that_fails_otherwise_releases_the_lock(
    connections: list[aioredis.Redis], namespace: str
) -> None:
    # An answer without member_id / user_id: the grant is stored with no owner to check.
    tokens = shared_tokens(connections[0], namespace, owner=lambda: (None, 5))
    await tokens.load(pair(1))
    assert tokens.lineage is not None
    lock = tokens.link.keys.lock(tokens.lineage)

    async def broken(given: bx.OAuthTokens) -> bx.OAuthTokens:
        raise RuntimeError("not an AuthError")

    with pytest.raises(RuntimeError):
        await tokens.refresh("access-1", pair(1), broken)
    assert await connections[0].exists(lock) == 0

    async def run(given: bx.OAuthTokens) -> bx.OAuthTokens:
        return pair(2)

    assert await tokens.refresh("access-1", pair(1), run) == (pair(2), True)
    grant = tokens.link.keys.grant(tokens.lineage)
    assert await connections[0].hget(grant, "user_id") is None


@pytest.mark.parametrize("failure", [RedisDown("timed out"), asyncio.CancelledError()])
async def test_a_failed_read_under_the_lock_releases_it(
    connections: list[aioredis.Redis], namespace: str, failure: BaseException
) -> None:
    tokens = shared_tokens(connections[0], namespace)
    await tokens.load(pair(1))
    assert tokens.lineage is not None
    link = tokens.link

    class Failing(type(link)):  # type: ignore[misc]
        reads = 0

        async def read_tokens(self, lineage: str, seed: bx.OAuthTokens | None = None) -> Any:
            Failing.reads += 1
            if Failing.reads == 2:  # the read inside the lock
                raise failure
            return await super().read_tokens(lineage, seed)

    failing = SharedTokens(Failing(link.coordinator, link.keys), URL("http://127.0.0.1:8123"))
    failing.lineage = tokens.lineage

    async def run(given: bx.OAuthTokens) -> bx.OAuthTokens:
        raise AssertionError("no refresh")

    with pytest.raises((bx.CoordinatorUnavailable, asyncio.CancelledError)):
        await failing.refresh("access-1", pair(1), run)
    assert await connections[0].exists(link.keys.lock(tokens.lineage)) == 0


async def test_a_unix_socket_redis_is_named_by_its_path() -> None:
    with pytest.raises(RedisUnusable, match=r"/nonexistent/redis\.sock"):
        await connect("unix:///nonexistent/redis.sock")


def test_a_warning_writer_that_fails_does_not_stop_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)

    def broken(line: str) -> None:
        raise BrokenPipeError

    with warnings_to(broken):
        logging.getLogger("bitrix_images.coordinator").warning("Redis is unreachable")
