"""The embedded portal's files: public ``detailUrl`` files, a closed ``/upload/``, a second
origin for the files (cloud storage), and the file faults, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from support import call

from bitrix_images.testing import FakePortal
from bitrix_images.testing._catalog import image_mime

LIST = "catalog.productImage.list"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _images(
    portal: FakePortal, session: aiohttp.ClientSession, product: int
) -> list[dict[str, Any]]:
    status, body = await call(session, portal.webhook_url / LIST, {"productId": product})
    assert status == 200
    images: list[dict[str, Any]] = body["result"]["productImages"]
    return images


def _detail(portal: FakePortal, image: dict[str, Any]) -> yarl.URL:
    return portal.origin.join(yarl.URL(image["detailUrl"], encoded=True))


async def test_public_file_is_the_download_and_counted_apart(
    session: aiohttp.ClientSession,
) -> None:
    async with FakePortal(products=2, images_per_product=2, image_size=4096) as portal:
        images = await _images(portal, session, 2)
        portal.counters.reset()
        for image in images:
            async with session.get(image["downloadUrl"]) as response:
                assert response.status == 200
                by_rest = await response.read()
            # No credentials of any kind: a hit on the web server.
            async with aiohttp.ClientSession() as anonymous:
                async with anonymous.get(_detail(portal, image)) as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == "image/png"
                    public = await response.read()
            assert public == by_rest
            assert len(public) >= 4096
        counters = portal.counters
        assert (counters.files, counters.files_by_status[200]) == (2, 2)
        assert counters.requests == 2  # the two downloads, not the files
        assert counters.by_method["download"] == 2
        assert counters.by_status[200] == 2


async def test_private_files_answer_nginx_403(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=1, public_files=False) as portal:
        image = (await _images(portal, session, 1))[0]
        async with session.get(_detail(portal, image)) as response:
            assert response.status == 403
            assert response.headers["Content-Type"].startswith("text/html")
            page = await response.text()
        assert "<title>403 Forbidden</title>" in page
        assert "<center>nginx</center>" in page
        # The REST link still works.
        async with session.get(image["downloadUrl"]) as response:
            assert response.status == 200
        assert portal.counters.files_by_status[403] == 1


async def test_files_origin_serves_the_files(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=2, files_origin="127.0.0.1") as portal:
        files = portal.files_origin
        assert files is not None
        assert files.port != portal.port
        image = (await _images(portal, session, 2))[1]
        url = yarl.URL(image["detailUrl"], encoded=True)
        assert url.is_absolute()
        assert url.origin() == files
        assert url.path.startswith("/upload/iblock/")
        async with session.get(url) as response:
            assert response.status == 200
            content = await response.read()
        assert content == portal.catalog.images(2)[1].content
        # The portal's own origin does not hold the files; the storage holds nothing else.
        async with session.get(portal.origin.with_path(url.path)) as response:
            assert response.status == 404
        async with session.get(files.with_path("/rest/1/x/scope")) as response:
            assert response.status == 404
        assert portal.counters.files == 3
        assert portal.counters.files_by_status == {200: 1, 404: 2}
    assert portal.files_origin is not None  # the address stays readable after close


async def test_closed_files_origin(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=1, files_origin="127.0.0.1", public_files=False) as portal:
        image = (await _images(portal, session, 1))[0]
        async with session.get(yarl.URL(image["detailUrl"], encoded=True)) as response:
            assert response.status == 403


async def test_file_faults_per_image(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=1, images_per_product=7, image_size=2048) as portal:
        images = await _images(portal, session, 1)
        ids = [image["id"] for image in images]
        portal.inject_file("forbidden", image_id=ids[0])
        portal.inject_file("not_found", image_id=ids[1])
        portal.inject_file("login_page", image_id=ids[2])
        portal.inject_file("cut_short", image_id=ids[3])
        portal.inject_file("other_bytes", image_id=ids[4])
        portal.inject_file("busy", image_id=ids[5], times=1)
        stored = {image.id: image.content for image in portal.catalog.images(1)}

        async def fetch(image: dict[str, Any]) -> tuple[int, str, bytes | None, dict[str, str]]:
            async with session.get(_detail(portal, image)) as response:
                try:
                    body: bytes | None = await response.read()
                except aiohttp.ClientPayloadError:
                    body = None
                return response.status, response.content_type, body, dict(response.headers)

        status, kind, body, _ = await fetch(images[0])
        assert (status, kind) == (403, "text/html")
        status, kind, body, _ = await fetch(images[1])
        assert (status, kind) == (404, "text/html")
        status, kind, body, _ = await fetch(images[2])
        assert (status, kind) == (200, "text/html")
        assert body is not None
        assert b"USER_PASSWORD" in body
        status, kind, body, headers = await fetch(images[3])
        assert (status, body) == (200, None)  # the connection closed before Content-Length
        assert headers["Content-Length"] == str(len(stored[ids[3]]))
        status, kind, body, _ = await fetch(images[4])
        assert (status, kind) == (200, "image/png")
        assert body is not None
        assert body != stored[ids[4]]
        assert image_mime(body) == "image/png"
        status, kind, body, headers = await fetch(images[5])
        assert (status, headers["Retry-After"]) == (503, "1")
        # A fault with `times` is spent; one without stays until cleared.
        assert (await fetch(images[5]))[2] == stored[ids[5]]
        assert (await fetch(images[6]))[2] == stored[ids[6]]
        assert (await fetch(images[0]))[0] == 403
        portal.clear_faults()
        assert (await fetch(images[0]))[2] == stored[ids[0]]


async def test_file_fault_for_every_file(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=1, images_per_product=2) as portal:
        images = await _images(portal, session, 1)
        portal.inject_file("forbidden", times=3)
        statuses = []
        for image in [*images, *images]:
            async with session.get(_detail(portal, image)) as response:
                statuses.append(response.status)
        assert statuses == [403, 403, 403, 200]


def test_file_fault_validation() -> None:
    portal = FakePortal()
    with pytest.raises(ValueError, match="unknown file fault"):
        portal.inject_file("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        portal.inject_file("forbidden", times=0)


async def test_unknown_file_paths(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=1) as portal:
        key = "0" * 16 + f"{1:016x}"
        for path in ("/upload/x.png", f"/upload/iblock/abc/{key}/photo-1.png"):
            async with session.get(portal.origin.with_path(path)) as response:
                assert response.status == 404
        assert portal.counters.files == 2
        assert portal.counters.requests == 0


async def test_files_origin_that_cannot_bind() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the second site cannot bind,
    # and the portal does not stay half-started.
    portal = FakePortal(files_origin="192.0.2.1")
    with pytest.raises(OSError, match="assign"):  # EADDRNOTAVAIL
        await portal.start()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(portal.origin / "rest/1/x/scope")
    await portal.close()
