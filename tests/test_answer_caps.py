"""Memory stays bounded against a hostile portal: answers past the cap are refused, error
bodies of downloads are not read whole, and list_many holds a bounded number of one
product's images (hostile loopback servers; nothing mocked)."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from hostile_support import hostile_server
from support import FAST_RETRY, PNG, UNLIMITED

import bitrix_images as bx
from bitrix_images import images as images_module
from bitrix_images._wire import protocol as _protocol

MIB = 1024 * 1024


async def collect(images: AsyncIterator[bx.ProductImage], into: list[bx.ProductImage]) -> None:
    async for image in images:
        into.append(image)


class Streamer:
    """Streams *size* bytes of a JSON string, noting whether the reader went away first."""

    def __init__(self, size: int, *, status: int = 200, length: bool = False) -> None:
        self.size = size
        self.status = status
        self.length = length
        self.sent = 0
        self.aborted = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=self.status)
        response.content_type = "application/json"
        if self.length:
            response.content_length = self.size
        await response.prepare(request)
        chunk = b'{"result": "' + b"x" * (64 * 1024)
        try:
            while self.sent < self.size:
                await response.write(chunk)
                self.sent += len(chunk)
                chunk = b"x" * (64 * 1024)
            await response.write(b'"}')
        except (ConnectionError, RuntimeError):
            self.aborted.set()
            raise
        return response


@pytest.mark.parametrize("length", [True, False])
async def test_an_answer_past_the_cap_is_refused(length: bool) -> None:
    streamer = Streamer(200 * MIB, length=length)
    async with (
        hostile_server(streamer.handle) as url,
        bx.BitrixClient.from_webhook(
            url, retry=FAST_RETRY, rate_limit=UNLIMITED, max_answer_bytes=1 * MIB
        ) as client,
    ):
        with pytest.raises(bx.MalformedResponse, match="larger than 1048576 bytes") as caught:
            await client.call("server.time")
    assert caught.value.attempts == 1  # not retried: the next answer would be as large
    await asyncio.wait_for(streamer.aborted.wait(), timeout=60)
    assert streamer.sent < 200 * MIB  # the body was never read whole


async def test_an_answer_within_the_cap_is_read() -> None:
    streamer = Streamer(512 * 1024)
    async with (
        hostile_server(streamer.handle) as url,
        bx.BitrixClient.from_webhook(url, max_answer_bytes=1 * MIB) as client,
    ):
        assert len(await client.call("server.time")) >= 512 * 1024


def test_the_default_cap() -> None:
    assert _protocol.MAX_ANSWER_BYTES == 64 * MIB
    with pytest.raises(ValueError, match="max_answer_bytes"):
        bx.BitrixClient.from_webhook("https://p.example.com/rest/1/c/", max_answer_bytes=0)


async def test_a_huge_error_body_of_a_download_is_not_read_whole(tmp_path: Path) -> None:
    streamer = Streamer(200 * MIB, status=500)
    async with (
        hostile_server(streamer.handle) as url,
        bx.BitrixClient.from_webhook(url, retry=FAST_RETRY, rate_limit=UNLIMITED) as client,
    ):
        image = bx.ProductImage(
            id=1,
            name="a.png",
            product_id=1,
            type=None,
            create_time=None,
            download_url=client.origin / "rest/download",
            detail_url=None,
        )
        with pytest.raises(bx.BitrixError) as caught:
            await client.images.download(image, tmp_path)
    assert caught.value.status == 500
    assert streamer.sent < 200 * MIB
    assert list(tmp_path.iterdir()) == []


async def test_list_many_holds_a_bounded_number_of_one_products_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(images_module, "MAX_PRODUCT_IMAGES", 500)
    pages = 0

    async def endless(request: web.Request) -> web.Response:
        # Every answer: 50 more images of product 1, and "there is more".
        nonlocal pages
        pages += 1
        start = pages * 50
        images = [{"id": start + i, "name": "x.png", "productId": 1} for i in range(50)]
        body = {
            "result": {
                "result": {"p0": {"productImages": images}},
                "result_error": [],
                "result_total": {"p0": 10**9},
                "result_next": {"p0": start + 50},
                "result_time": [],
            }
        }
        return web.json_response(body)

    async with (
        hostile_server(endless) as url,
        bx.BitrixClient.from_webhook(url, retry=FAST_RETRY, rate_limit=UNLIMITED) as client,
    ):
        listed: list[bx.ProductImage] = []
        with pytest.raises(bx.BatchError, match="more than 500 images") as caught:
            await collect(client.images.list_many([1]), listed)
    assert listed == []  # no image of a product that never ends is yielded
    assert caught.value.product_id == 1
    assert pages <= 500 // 50 + 1


def _gzipped(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler answering *body* gzip-compressed, with the compressed Content-Length."""
    packed = gzip.compress(body, compresslevel=9)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(
            body=packed, content_type=content_type, headers={"Content-Encoding": "gzip"}
        )

    return handle


async def test_a_gzip_answer_is_capped_at_its_inflated_size() -> None:
    # 8 MiB of JSON in about 8 KiB of gzip: the Content-Length is far below the cap.
    body = b'{"result": "' + b"x" * (8 * MIB) + b'"}'
    async with (
        hostile_server(_gzipped(body, "application/json")) as url,
        bx.BitrixClient.from_webhook(
            url, retry=FAST_RETRY, rate_limit=UNLIMITED, max_answer_bytes=1 * MIB
        ) as client,
    ):
        with pytest.raises(bx.MalformedResponse, match="larger than 1048576 bytes"):
            await client.call("server.time")


async def test_a_gzip_download_is_spooled_as_it_inflates(tmp_path: Path) -> None:
    # 64 MiB in about 64 KiB of gzip: far more than a download holds in memory (4 MiB).
    content = PNG + bytes(64 * MIB)
    async with (
        hostile_server(_gzipped(content, "image/png")) as url,
        bx.BitrixClient.from_webhook(url, retry=FAST_RETRY, rate_limit=UNLIMITED) as client,
    ):
        image = bx.ProductImage(
            id=1, name="a.png", product_id=1, download_url=client.origin / "rest/download"
        )
        tracemalloc.start()
        try:
            path = await client.images.download(image, tmp_path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert path.stat().st_size == len(content)
    assert peak < 32 * MIB
