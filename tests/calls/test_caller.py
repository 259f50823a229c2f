"""The caller against the embedded portal: every row of the retry table, token
refresh, the client-side bucket, and transport safety. All over loopback, nothing mocked."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import aiohttp.abc
import attrs
import pytest
import yarl
from aiohttp import web
from support import FAST_RETRY, PNG, UNLIMITED, oauth_client, secrets_of

import bitrix_images as bx
from bitrix_images._wire.auth import WebhookAuth
from bitrix_images.testing import (
    EXPIRED_TOKEN,
    INTERNAL_SERVER_ERROR,
    OPERATION_TIME_LIMIT,
    OVERLOAD_LIMIT,
    QUERY_LIMIT_EXCEEDED,
    FakePortal,
    instant_retries,
)

LIST = "catalog.productImage.list"


def assert_clean(error: BaseException, portal: FakePortal) -> None:
    """No credential in the message, the repr, or anything chained to it."""
    seen: BaseException | None = error
    while seen is not None:
        for text in (str(seen), repr(seen)):
            for secret in secrets_of(portal):
                assert secret not in text
        seen = seen.__cause__ or seen.__context__


# --- the retry table ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [QUERY_LIMIT_EXCEEDED, OVERLOAD_LIMIT])
async def test_load_refusals_back_off_to_success(
    portal: FakePortal, client: bx.BitrixClient, body: dict[str, object]
) -> None:
    portal.inject("error", times=3, status=503, body=body)
    images = [image async for image in client.images.list(1)]
    assert len(images) == 3
    assert portal.counters.by_status[503] == 3
    assert portal.counters.by_method["catalog.productimage.list"] == 4
    assert client.stats.retries == 3


async def test_load_refusals_exhaust_into_rate_limited(
    portal: FakePortal, client: bx.BitrixClient
) -> None:
    portal.inject("error", times=100, status=503, body=QUERY_LIMIT_EXCEEDED)
    with pytest.raises(bx.RateLimited) as info:
        await client.images.get(1, 1)
    assert info.value.attempts == FAST_RETRY.max_attempts
    assert info.value.code == "QUERY_LIMIT_EXCEEDED"
    assert "6 attempts" in str(info.value)
    assert portal.counters.requests == FAST_RETRY.max_attempts


async def test_add_under_a_503_creates_exactly_one_image(
    portal: FakePortal, client: bx.BitrixClient
) -> None:
    portal.inject(
        "error", times=2, status=503, body=QUERY_LIMIT_EXCEEDED, method="catalog.productImage.add"
    )
    image = await client.images.add(2, PNG, name="new.png")
    stored = portal.catalog.images(2)
    assert [i.id for i in stored].count(image.id) == 1
    assert len(stored) == 4
    assert stored[-1].content == PNG


async def test_operation_time_limit_waits_for_the_reset() -> None:
    async with FakePortal(products=3, rate=None, operating_cost=0.2, operating_limit=100) as portal:
        slow = bx.RetryPolicy(initial_delay=0.001, max_delay=0.01, max_wait=1.0)
        async with (
            bx.BitrixClient.from_webhook(
                portal.webhook_url, retry=slow, rate_limit=UNLIMITED
            ) as client,
            instant_retries() as clock,
        ):
            await client.images.get(1, 1)  # learns operating_reset_at from the time block
            portal.inject("error", status=429, body=OPERATION_TIME_LIMIT)
            # The reset is up to ten minutes away: more than the budget, so it gives up at
            # once (without a known reset it would wait max_delay and succeed).
            with pytest.raises(bx.RateLimited) as info:
                await client.images.get(1, 1)
            assert info.value.code == "OPERATION_TIME_LIMIT"
            assert info.value.attempts == 1
            assert clock.waits == []
            assert info.value.status == 429


async def test_operation_time_limit_retried_when_the_reset_is_near() -> None:
    async with (
        FakePortal(
            products=3, rate=None, operating_cost=0.01, operating_limit=100, operating_window=1.0
        ) as portal,
        bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
        ) as client,
    ):
        await client.images.get(1, 1)
        portal.inject("error", status=429, body=OPERATION_TIME_LIMIT)
        image = await client.images.get(1, 1)
        assert image.id == 1
        assert portal.counters.by_status[429] == 1
        assert client.stats.retry_wait > 0


async def test_unknown_reset_waits_max_delay(portal: FakePortal, client: bx.BitrixClient) -> None:
    portal.inject("error", times=2, status=429, body=OPERATION_TIME_LIMIT)
    assert (await client.images.get(1, 1)).id == 1
    assert portal.counters.by_status[429] == 2


async def test_a_method_near_its_operating_limit_pauses_before_the_portal_blocks_it() -> None:
    # Each call books 0.3 s; the limit is 1 s per 1.5 s window. The client reads
    # time.operating and waits for operating_reset_at instead of running into 429.
    async with FakePortal(
        products=3, rate=None, operating_cost=0.3, operating_limit=1.0, operating_window=1.5
    ) as portal:
        limits = bx.RateLimit(rate=math.inf, operating_limit=1.0, operating_headroom=0.9)
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=limits
        ) as client:
            for _ in range(6):
                await client.images.get(1, 1)
            assert portal.counters.by_status[429] == 0
            assert client.stats.throttle_wait > 0.2


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("error", 500, INTERNAL_SERVER_ERROR),
        ("html", 502, None),
        ("html", 504, None),
        ("reset", None, None),
        ("truncated", None, None),
    ],
)
async def test_transient_failures_are_retried_for_reads(
    portal: FakePortal,
    client: bx.BitrixClient,
    kind: str,
    status: int | None,
    body: dict[str, object] | None,
) -> None:
    portal.inject(kind, times=2, status=status, body=body)  # type: ignore[arg-type]
    images = [image async for image in client.images.list(1)]
    assert [i.id for i in images] == [i.id for i in portal.catalog.images(1)]
    assert client.stats.retries == 2


async def test_timeouts_are_retried_for_reads(portal: FakePortal) -> None:
    # The first answer comes far later than the timeout; the retry is answered at once. (On a
    # loaded machine a retry may time out too: what matters is that timeouts are retried.)
    portal.inject("delay", delay=5.0)
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED, timeout=1.0
    ) as client:
        assert (await client.images.get(1, 1)).id == 1
        assert client.stats.retries >= 1
        assert portal.counters.by_method["catalog.productimage.get"] == client.stats.requests


async def test_connection_refused_is_retried_then_raised() -> None:
    portal = FakePortal()
    await portal.start()
    url = portal.webhook_url
    await portal.close()
    async with bx.BitrixClient.from_webhook(url, retry=FAST_RETRY, rate_limit=UNLIMITED) as client:
        with pytest.raises(bx.TransportError) as info:
            await client.images.get(1, 1)
        # Nothing reached a portal, so even a write may be retried.
        with pytest.raises(bx.TransportError) as write:
            await client.images.delete(1, 1)
    assert info.value.attempts == FAST_RETRY.max_attempts
    assert write.value.attempts == FAST_RETRY.max_attempts
    assert not isinstance(write.value, bx.OutcomeUnknown)
    assert "cannot connect" in str(info.value)


async def test_a_500_on_add_is_not_replayed(portal: FakePortal, client: bx.BitrixClient) -> None:
    portal.inject(
        "error", status=500, body=INTERNAL_SERVER_ERROR, method="catalog.productImage.add"
    )
    with pytest.raises(bx.ServerError) as info:
        await client.images.add(1, PNG, name="x.png")
    assert info.value.attempts == 1
    assert portal.counters.by_method["catalog.productimage.add"] == 1


@pytest.mark.parametrize("kind", ["html", "truncated", "drop"])
async def test_a_lost_answer_to_add_is_outcome_unknown(
    portal: FakePortal, client: bx.BitrixClient, kind: str
) -> None:
    before = len(portal.catalog.images(1))
    portal.inject(kind, method="catalog.productImage.add")  # type: ignore[arg-type]
    with pytest.raises(bx.OutcomeUnknown) as info:
        await client.images.add(1, PNG, name="x.png")
    assert portal.counters.by_method["catalog.productimage.add"] == 1
    after = portal.catalog.images(1)
    # "html" answers before processing; "truncated" and "drop" process first: either way,
    # exactly zero or one image exists, never two.
    assert len(after) == before + (0 if kind == "html" else 1)
    assert "not replayed" in str(info.value)
    assert_clean(info.value, portal)


async def test_a_dropped_delete_is_not_replayed(
    portal: FakePortal, client: bx.BitrixClient
) -> None:
    target = portal.catalog.images(1)[0].id
    portal.inject("drop", method="catalog.productImage.delete")
    with pytest.raises(bx.OutcomeUnknown):
        await client.images.delete(1, target)
    assert portal.counters.by_method["catalog.productimage.delete"] == 1
    assert target not in [i.id for i in portal.catalog.images(1)]


async def test_other_errors_raise_at_once(portal: FakePortal, client: bx.BitrixClient) -> None:
    with pytest.raises(bx.NotFound) as info:
        await client.images.get(999, 1)
    assert info.value.code == 0
    assert info.value.status == 400
    assert info.value.attempts == 1
    portal.catalog.deny_read(2)
    with pytest.raises(bx.AccessDenied) as denied:
        await client.images.get(2, 4)
    assert denied.value.code == 200040300010
    assert portal.counters.requests == 2


async def test_unknown_method_is_an_invalid_request(client: bx.BitrixClient) -> None:
    with pytest.raises(bx.InvalidRequest) as info:
        await client.call("no.such.method")
    assert info.value.code == "ERROR_METHOD_NOT_FOUND"


# --- auth --------------------------------------------------------------------------------


async def test_bad_webhook_is_an_auth_error(portal: FakePortal) -> None:
    bad = portal.webhook_url.parent.parent / "wrongcode" / ""
    async with bx.BitrixClient.from_webhook(bad, retry=FAST_RETRY) as client:
        with pytest.raises(bx.AuthError) as info:
            await client.images.fields()
    assert info.value.status == 401
    assert info.value.attempts == 1
    assert "wrongcode" not in str(info.value)


async def test_webhook_expired_token_is_not_refreshed(
    portal: FakePortal, client: bx.BitrixClient
) -> None:
    portal.inject("error", status=401, body=EXPIRED_TOKEN)
    with pytest.raises(bx.AuthError):
        await client.images.fields()
    assert portal.counters.refreshes == 0


async def test_oauth_refreshes_once_and_replays(portal: FakePortal) -> None:
    saved: list[bx.OAuthTokens] = []

    async def save(tokens: bx.OAuthTokens) -> None:
        saved.append(tokens)

    async with oauth_client(portal, on_token_refresh=save) as client:
        await client.images.fields()
        portal.expire_access_token()
        fields = await client.images.fields()
    assert "productId" in fields
    assert portal.counters.refreshes == 1
    assert len(saved) == 1
    assert saved[0].access_token == portal.access_token
    assert saved[0].refresh_token == portal.refresh_token
    assert saved[0].client_endpoint == portal.client_endpoint
    assert saved[0].expires_at.tzinfo is not None


async def test_twenty_concurrent_calls_on_an_expired_token_make_one_refresh(
    portal: FakePortal, secret_watch: object
) -> None:
    calls = 0

    async def save(tokens: bx.OAuthTokens) -> None:
        nonlocal calls
        calls += 1

    async with oauth_client(portal, on_token_refresh=save) as client:
        portal.expire_access_token()
        results = await asyncio.gather(*(client.images.get(1, 1) for _ in range(20)))
    assert len(results) == 20
    assert portal.counters.refreshes == 1
    assert calls == 1
    assert portal.counters.by_status[401] == 20


async def test_a_persistent_auth_failure_is_not_a_refresh_loop(portal: FakePortal) -> None:
    portal.inject("error", times=50, status=401, body=EXPIRED_TOKEN)
    async with oauth_client(portal) as client:
        with pytest.raises(bx.AuthError) as info:
            await client.images.fields()
    assert portal.counters.refreshes == 1
    assert portal.counters.by_method["catalog.productimage.getfields"] == 2
    assert_clean(info.value, portal)


async def test_a_rejected_refresh_is_an_auth_error_for_everyone(portal: FakePortal) -> None:
    portal.reject_refresh = True
    async with oauth_client(portal) as client:
        portal.expire_access_token()
        errors = await asyncio.gather(
            *(client.images.get(1, 1) for _ in range(5)), return_exceptions=True
        )
    assert all(isinstance(e, bx.AuthError) for e in errors)
    assert portal.counters.by_method["oauth.token"] == 1
    assert "refresh" in str(errors[0])
    for error in errors:
        assert isinstance(error, BaseException)
        assert_clean(error, portal)


async def test_refresh_transport_failure_is_an_auth_error(portal: FakePortal) -> None:
    portal.inject("html", status=502, method="oauth.token")
    async with oauth_client(portal) as client:
        portal.expire_access_token()
        with pytest.raises(bx.AuthError, match="refresh"):
            await client.images.fields()


# --- throttling --------------------------------------------------------------------------


async def test_fifty_concurrent_calls_fit_a_bucket_of_the_same_size() -> None:
    async with FakePortal(products=5, rate=2.0, burst=50) as portal:
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=bx.RateLimit(rate=2.0, burst=50)
        ) as client:
            await asyncio.gather(*(client.images.get(1, 1) for _ in range(50)))
        assert portal.counters.by_status[200] == 50
        assert portal.counters.rate_limited == 0


async def test_a_looser_client_bucket_still_completes_through_retries() -> None:
    async with FakePortal(products=5, rate=50.0, burst=5) as portal:
        retry = bx.RetryPolicy(max_attempts=30, initial_delay=0.01, max_delay=0.1, max_wait=30)
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url,
            retry=retry,
            rate_limit=bx.RateLimit(rate=math.inf, max_in_flight=16),
        ) as client:
            results = await asyncio.gather(*(client.images.get(1, 1) for _ in range(40)))
        assert len(results) == 40
        assert portal.counters.rate_limited > 0
        assert portal.counters.by_status[200] == 40


async def test_requests_in_flight_are_bounded(portal: FakePortal) -> None:
    portal.inject("delay", times=20, delay=0.05)
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url,
        retry=FAST_RETRY,
        rate_limit=bx.RateLimit(rate=math.inf, max_in_flight=3),
    ) as client:
        await asyncio.gather(*(client.images.get(1, 1) for _ in range(12)))
    assert portal.counters.max_in_flight <= 3


# --- transport safety --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://example.bitrix24.com/rest/1/abc/", "http://10.0.0.1/rest/1/abc/"],
)
def test_plain_http_only_to_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="plain http") as info:
        bx.BitrixClient.from_webhook(url)
    assert "abc" not in str(info.value)
    bx.BitrixClient.from_webhook(url, allow_insecure=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:1/rest/1/abc/",
        "http://127.5.0.1/rest/1/abc",
        "http://[::1]:8080/rest/1/abc/",
        "https://example.bitrix24.com/rest/1/abc/",
    ],
)
def test_accepted_urls(url: str) -> None:
    client = bx.BitrixClient.from_webhook(url)
    assert "abc" not in repr(client)
    assert client.origin.host in repr(client)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://example.com/rest/1/abc/", ValueError),
        ("https://example.com/rest/1/abc/?x=1", ValueError),
        ("https://example.com/hooks/", ValueError),
        ("/rest/1/abc/", ValueError),
        (12, TypeError),
    ],
)
def test_rejected_urls(url: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        bx.BitrixClient.from_webhook(url)  # type: ignore[arg-type]


@pytest.fixture(name="mover")
async def _mover(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback server that answers every request with a redirect to another host."""
    hits: list[str] = []
    target = getattr(request, "param", "https://new-portal.bitrix24.com{path}")

    async def moved(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=302, headers={"Location": target.format(path=request.path)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", moved)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/rest/1/s3cretcode/", hits
    finally:
        await runner.cleanup()


async def test_a_moved_portal_is_not_followed(mover: tuple[str, list[str]]) -> None:
    url, hits = mover
    async with bx.BitrixClient.from_webhook(url, retry=FAST_RETRY) as client:
        with pytest.raises(bx.PortalMoved) as info:
            await client.images.fields()
    assert info.value.new_host == "new-portal.bitrix24.com"
    assert "new-portal.bitrix24.com" in str(info.value)
    assert "s3cretcode" not in str(info.value)
    assert len(hits) == 1


@pytest.mark.parametrize(
    "mover", ["http://[::1{path}", "http://new-portal.example:99999{path}", ""], indirect=True
)
async def test_a_malformed_redirect_is_portal_moved_without_a_host(
    mover: tuple[str, list[str]],
) -> None:
    url, hits = mover
    async with bx.BitrixClient.from_webhook(url, retry=FAST_RETRY) as client:
        with pytest.raises(bx.PortalMoved) as info:
            await client.images.fields()
    assert info.value.new_host is None
    assert "an unknown address" in str(info.value)
    assert "s3cretcode" not in str(info.value)
    assert len(hits) == 1


async def test_a_borrowed_session_stays_open(portal: FakePortal) -> None:
    async with aiohttp.ClientSession() as session:
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, session=session, retry=FAST_RETRY
        ) as client:
            await client.images.fields()
        assert not session.closed
        async with bx.BitrixClient.from_webhook(portal.webhook_url, session=session) as again:
            await again.images.fields()
    owned = bx.BitrixClient.from_webhook(portal.webhook_url)
    await owned.images.fields()
    await owned.close()
    with pytest.raises(RuntimeError, match="closed"):
        await owned.images.fields()


async def test_call_is_the_escape_hatch(portal: FakePortal, client: bx.BitrixClient) -> None:
    result = await client.call("catalog.productImage.list", {"productId": 1})
    assert len(result["productImages"]) == 3
    products = [
        p
        async for p in client.paginate(
            "catalog.product.list", {"filter": {"iblockId": 14}, "select": ["id"]}, key="products"
        )
    ]
    assert [p["id"] for p in products] == portal.catalog.product_ids()


@pytest.mark.parametrize(
    ("method", "params", "error"),
    [
        ("../../evil", None, ValueError),
        ("", None, ValueError),
        (5, None, TypeError),
        ("user.current", [1], TypeError),
    ],
)
async def test_call_validates_before_sending(
    portal: FakePortal, client: bx.BitrixClient, method: object, params: object, error: type
) -> None:
    with pytest.raises(error):
        await client.call(method, params)  # type: ignore[arg-type]
    assert portal.counters.requests == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"params": [1]}, TypeError),
        ({"params": {"start": 5}}, ValueError),
        ({"key": ""}, ValueError),
        ({"start": -1}, ValueError),
        # A wrong type is a TypeError everywhere, as for images.list(start="1").
        ({"start": "1"}, TypeError),
        ({"start": True}, TypeError),
    ],
)
def test_paginate_validates(
    client: bx.BitrixClient, kwargs: dict[str, object], error: type
) -> None:
    options: dict[str, object] = {"key": "products"}
    options.update(kwargs)
    with pytest.raises(error):
        client.paginate("catalog.product.list", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rate_limit": 5}, TypeError),
        ({"retry": 5}, TypeError),
        ({"session": 5}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"timeout": True}, TypeError),
        ({"timeout": math.inf}, ValueError),
    ],
)
def test_client_options_are_checked(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        bx.BitrixClient.from_webhook("https://p.example/rest/1/abc/", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"access_token": ""}, ValueError),
        ({"client_secret": None}, ValueError),
        ({"on_token_refresh": 5}, TypeError),
    ],
)
def test_oauth_options_are_checked(kwargs: dict[str, object], error: type) -> None:
    options: dict[str, object] = {
        "access_token": "a",
        "refresh_token": "r",
        "client_id": "c",
        "client_secret": "s",
    }
    options.update(kwargs)
    with pytest.raises(error):
        bx.BitrixClient.from_oauth("https://p.example/rest/", **options)  # type: ignore[arg-type]


def test_reprs_and_properties(portal: FakePortal) -> None:
    client = oauth_client(portal)
    auth = WebhookAuth(yarl.URL(str(portal.webhook_url)))
    text = repr(client) + repr(client.stats)
    for secret in secrets_of(portal):
        assert secret not in text
    assert "oauth" in repr(client)
    assert client.rate_limit == UNLIMITED
    assert client.retry_policy == FAST_RETRY
    assert portal.webhook_code not in repr(auth)
    assert portal.webhook_code in auth.secrets


def test_version_is_exported() -> None:
    assert isinstance(bx.__version__, str)
    with pytest.raises(AttributeError):
        bx.no_such_name  # noqa: B018


async def test_waits_are_logged_without_secrets(portal: FakePortal, secret_watch: object) -> None:
    # One request per half second: the next request has to wait for the bucket unless the
    # last one took half a second (rate=50 made that 20 ms, which a loaded machine exceeds).
    limits = bx.RateLimit(rate=2.0, burst=1)
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=FAST_RETRY, rate_limit=limits
    ) as client:
        portal.inject("error", status=503, body=QUERY_LIMIT_EXCEEDED)
        for _ in range(3):
            await client.images.get(1, 1)
    lines: list[str] = secret_watch.lines  # type: ignore[attr-defined]
    assert any("waiting" in line and "rate limit" in line for line in lines)
    assert any("QUERY_LIMIT_EXCEEDED" in line and "retry 1" in line for line in lines)
    assert any("HTTP 200" in line for line in lines)


async def test_a_batch_books_its_commands_operating_time_not_its_own() -> None:
    async with FakePortal(
        products=3, rate=None, operating_cost={"catalog.productimage.list": 0.5}
    ) as portal:
        # 1.5 s of list time (three commands) is past 90 % of a 1 s limit; a get is not.
        limits = bx.RateLimit(rate=math.inf, operating_limit=1.0)
        async with (
            bx.BitrixClient.from_webhook(
                portal.webhook_url, retry=FAST_RETRY, rate_limit=limits
            ) as client,
            instant_retries() as clock,
        ):
            _ = [image async for image in client.images.list_many([1, 2, 3])]
            await client.images.get(1, 1)
            assert clock.waits == []  # the batch's time was not booked under get (or batch)
            _ = [image async for image in client.images.list(1)]
            assert len(clock.waits) == 1  # the commands' time was booked under list
            assert client.stats.throttle_wait == clock.total


# --- what tests and users can see: requests in flight, instant retries -----------------------


async def test_stats_count_the_requests_in_flight(portal: FakePortal) -> None:
    limits = bx.RateLimit(rate=math.inf, max_in_flight=3)
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=FAST_RETRY, rate_limit=limits
    ) as client:
        portal.inject("delay", method="catalog.productImage.get", delay=0.2, times=6)
        calls = [asyncio.ensure_future(client.images.get(1, 1)) for _ in range(6)]
        await asyncio.wait_for(_until(lambda: client.stats.in_flight == 3), timeout=30)
        await asyncio.gather(*calls)
        assert client.stats.in_flight == 0
        assert client.stats.max_in_flight == 3  # never more than max_in_flight at once
        assert client.stats.requests == 6


async def test_instant_retries_skip_the_waits_and_keep_the_rules(portal: FakePortal) -> None:
    slow = bx.RetryPolicy(max_attempts=3, initial_delay=30.0, max_delay=60.0, max_wait=600.0)
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=slow, rate_limit=UNLIMITED
    ) as client:
        portal.inject("error", status=503, body=QUERY_LIMIT_EXCEEDED, times=5)
        with instant_retries() as clock, pytest.raises(bx.RateLimited) as info:
            await client.images.get(1, 1)
        assert info.value.attempts == 3
        assert len(clock.waits) == 2  # two backoffs of up to 30 s and 60 s, not slept
        assert all(0 <= w <= 60.0 for w in clock.waits)
        assert client.stats.retry_wait == pytest.approx(clock.total)
    with instant_retries() as outer:
        async with instant_retries() as inner:
            pass
        assert inner.waits == outer.waits == []


async def test_a_download_url_of_the_same_origin_written_otherwise_is_fetched(
    portal: FakePortal, tmp_path: Path
) -> None:
    # "http://PORTAL.test:80" is "http://portal.test" (RFC 6454). The portal listens on a
    # loopback port; a resolver (aiohttp's public API) sends portal.test:80 there.
    resolver = _ToPortal(portal.port)
    connector = aiohttp.TCPConnector(resolver=resolver)
    webhook = f"http://portal.test/{portal.webhook_url.path.lstrip('/')}"
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        bx.BitrixClient.from_webhook(
            webhook, session=session, retry=FAST_RETRY, allow_insecure=True
        ) as client,
    ):
        image = await client.images.get(1, 1)
        assert image.download_url is not None
        spelled = yarl.URL(f"http://PORTAL.test:80{image.download_url.raw_path_qs}", encoded=True)
        written = await client.images.download(attrs.evolve(image, download_url=spelled), tmp_path)
    assert written.read_bytes() == portal.catalog.images(1)[0].content
    assert {host.lower() for host in resolver.hosts} == {"portal.test"}


class _ToPortal(aiohttp.abc.AbstractResolver):
    """Resolves every name to the embedded portal on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hosts: set[str] = set()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        self.hosts.add(host)
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)
