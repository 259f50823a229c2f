"""
Type-checked, never executed: the public API as a user's strictly typed code sees it.

``make lint`` runs ``mypy --strict`` over this file; a change that breaks users' typing
breaks the build.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from yarl import URL

import bitrix_images as bx
from bitrix_images.testing import instant_retries


async def save(tokens: bx.OAuthTokens) -> None:
    access: str = tokens.access_token
    endpoint: URL = tokens.client_endpoint
    del access, endpoint


async def ids() -> AsyncIterator[int]:
    yield 1


async def use() -> None:
    async with bx.BitrixClient.from_webhook(
        "https://example.bitrix24.com/rest/1/abc/",
        rate_limit=bx.RateLimit(rate=2.0, burst=50),
        retry=bx.RetryPolicy(max_attempts=6, initial_delay=0.5, max_delay=30.0),
    ) as client:
        paginator: bx.AsyncPaginator[bx.ProductImage] = client.images.list(1, select=["name"])
        async for image in paginator:
            url: URL | None = image.download_url
            kind: bx.ImageType | None = image.type
            del url, kind
        async for page in paginator.pages():
            items: tuple[bx.ProductImage, ...] = page.items
            following: int | None = page.next
            del items, following
        async for image in client.images.list_many([1, 2, 3]):
            path: Path = await client.images.download(image, Path("out"))
            public: Path = await client.images.download(image, "out", via="public")
            del path, public
        links: bx.LinkStats = client.public_links
        fallbacks: dict[str, int] = links.fallbacks
        del links, fallbacks
        async for image in client.images.list_many(ids()):
            del image
        one: bx.ProductImage = await client.images.get(1, 2)
        added: bx.ProductImage = await client.images.add(1, b"...", name="a.png")
        await client.images.delete(1, added.id)
        fields: Mapping[str, bx.FieldInfo] = await client.images.fields()
        raw: object = await client.call("user.current")
        stats: bx.ClientStats = client.stats
        in_flight: int = stats.in_flight + stats.max_in_flight
        resource: bx.Images = client.images
        report: bx.PortalReport = await client.doctor(write_check=1)
        verdict: bool = report.ok
        check: bx.Check = report.checks[0]
        status: str = check.status
        hint: str | None = report.check("write").hint
        del verdict, status, hint
        with instant_retries() as clock:
            waits: list[float] = clock.waits
            total: float = clock.total
        del one, fields, raw, stats, in_flight, resource, waits, total
        mirrored: bx.MirrorResult = await bx.mirror(client, [1, 2], "out", prune=True)
        pulled: bx.MirrorResult = await bx.mirror(client, ids(), Path("out"), verify=True)
        pushed: bx.UploadResult = await bx.upload(client, "photos", prune=True, dry_run=True)
        counts: tuple[int, int, str] = (mirrored.removed, pushed.added, pulled.summary())
        plan: tuple[str, ...] = pushed.planned
        events: list[bx.FileEvent] = []
        watched = await bx.mirror(client, [1], "out", on_event=events.append)
        await bx.upload(client, "photos", on_event=lambda event: print(event.line))
        held: float = watched.held + pushed.held + client.stats.held
        line: str = events[0].line
        del held, line
        catalog = bx.catalog_ids(client, 14)
        known: int | None = catalog.total
        product_ids: list[int] = [product_id async for product_id in catalog]
        del counts, plan, known, product_ids
        await bx.mirror(client, bx.catalog_ids(client, 14), "out")
        try:
            again = await bx.mirror(client, [1], "out", prune=True, max_delete=10, rebind=True)
            held_back: int = again.held_back
            del held_back
        except bx.PortalMismatch as mismatch:
            hosts: tuple[str, str] = (mismatch.bound, mismatch.host)
            del hosts
    oauth = bx.BitrixClient.from_oauth(
        "https://example.bitrix24.com/rest/",
        access_token="a",
        refresh_token="r",
        client_id="c",
        client_secret="s",
        on_token_refresh=save,
    )
    await oauth.close()
    try:
        await oauth.images.fields()
    except bx.RateLimited as error:
        code: str | int | None = error.code
        attempts: int = error.attempts
        del code, attempts
    except bx.BatchError as error:
        errors: Mapping[str, bx.BitrixError] = error.errors
        del errors


async def coordinated() -> None:
    import redis.asyncio as redis

    connection = redis.Redis.from_url("redis://localhost:6379/0")
    coordinator = bx.RedisCoordinator(connection, namespace="bitrix_images")
    async with bx.BitrixClient.from_webhook(
        "https://example.bitrix24.com/rest/1/abc/", coordinator=coordinator
    ) as client:
        fallbacks: int = client.stats.coordinator_fallbacks
        del fallbacks
    oauth = bx.BitrixClient.from_oauth(
        "https://example.bitrix24.com/rest/",
        access_token="a",
        refresh_token="r",
        client_id="c",
        client_secret="s",
        coordinator=coordinator,
    )
    try:
        await oauth.images.fields()
    except bx.CoordinatorUnavailable as error:
        retryable: bx.TransportError = error
        del retryable
    await oauth.close()
    await connection.aclose()
