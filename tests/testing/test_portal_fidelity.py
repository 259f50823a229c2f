"""Fidelity: a client nobody here wrote (fast-bitrix24) and the docs' own example JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from fast_bitrix24 import BitrixAsync

from bitrix_images.testing import FakePortal

# DOCS catalog-product-image-list.md, "Response Handling" (stored in
# /work/shared/seeds/catalog.productImage.list.txt), verbatim but re-wrapped.
DOC_EXAMPLE = "".join(
    (
        r'{"result": {"productImages": [{',
        r'"createTime": "2024-10-17T10:48:05+02:00",',
        r'"detailUrl": "\/upload\/iblock\/6f1\/bkm7jmwso31wisk423gtp28iagy2e8v0\/test.jpeg",',
        r'"downloadUrl": "http:\/\/dev.bx\/rest\/download.json?sessid=ae1ada0e5c85babd18ce4af',
        r"4c702d1d9\u0026token=catalog%7CaWQ9NzY1MSZfPTEzSk9hR2tKNHBRY1I2cFBPNjhvaTFHNTNiYjVsVmdx",
        r"%7CImRvd25sb2FkfGNhdGFsb2d8YVdROU56WTFNU1pmUFRFelNrOWhSMnRLTkhCUlkxSTJjRkJQTmpodmFURkhO",
        r"VE5pWWpWc1ZtZHh8YWUxYWRhMGU1Yzg1YmFiZDE4Y2U0YWY0YzcwMmQxZDki.iC0Yzi9feK8V1Zr0WSlp5GZpcm",
        r'D0osnJGHN%2FZL%2FkQI4%3D",',
        r'"id": 1, "name": "test.jpeg", "productId": 1, "type": "MORE_PHOTO"}]},',
        r'"total": 1,',
        r'"time": {"start": 1729163241.324569, "finish": 1729163241.860237,',
        r'"duration": 0.535667896270752, "processing": 0.19502019882202148,',
        r'"date_start": "2024-10-17T14:07:21+02:00", "date_finish": "2024-10-17T14:07:21+02:00"}}',
    )
)

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def _shape(value: Any) -> Any:
    """Keys and value types, recursively (floats and ints both count as numbers)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_doc_example_has_the_same_shape(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=1, images_per_product=0, operating_limit=None) as portal:
        created = datetime.fromisoformat("2024-10-17T10:48:05+02:00")
        image = portal.catalog.add_image(
            1, name="test.jpeg", content=JPEG, type="MORE_PHOTO", created=created
        )
        assert image.id == 1
        payload = {
            "productId": 1,
            "select": ["id", "name", "productId", "type", "createTime", "downloadUrl", "detailUrl"],
        }
        async with session.post(
            portal.webhook_url / "catalog.productImage.list", json=payload
        ) as r:
            ours = await r.json()
    doc = json.loads(DOC_EXAMPLE)
    assert _shape(ours) == _shape(doc)
    ours_image, doc_image = ours["result"]["productImages"][0], doc["result"]["productImages"][0]
    for key in ("createTime", "id", "name", "productId", "type"):
        assert ours_image[key] == doc_image[key]
    assert list(ours_image) == list(doc_image)
    assert ours_image["detailUrl"].startswith("/upload/iblock/")
    assert ours_image["detailUrl"].endswith("/test.jpeg")
    assert len(ours_image["detailUrl"].split("/")[3]) == len(doc_image["detailUrl"].split("/")[3])
    assert len(ours_image["detailUrl"].split("/")[4]) == len(doc_image["detailUrl"].split("/")[4])
    assert "token=catalog%7C" in ours_image["downloadUrl"]
    assert "token=catalog%7C" in doc_image["downloadUrl"]


def _ids(images: Any) -> list[int]:
    return sorted(int(image["id"]) for image in images)


@pytest.mark.parametrize("page_mode", ["source", "offset"])
async def test_fast_bitrix24_get_all(page_mode: str) -> None:
    async with FakePortal(products=3, images_per_product=237, page_mode=page_mode) as portal:  # type: ignore[arg-type]  # parametrised literal
        bx = BitrixAsync(str(portal.webhook_url), verbose=False)
        images = await bx.get_all("catalog.productImage.list", {"productId": 2})
        stored = portal.catalog.images(2)
        assert _ids(images) == [image.id for image in stored]
        by_id = {int(image["id"]): image for image in images}
        for image in stored:
            assert by_id[image.id]["name"] == image.name
            assert by_id[image.id]["type"] == image.type
            assert by_id[image.id]["productId"] == 2
        expected_requests = {"source": 1, "offset": 2}[page_mode]  # offset: 1 + 1 batch
        assert portal.counters.requests == expected_requests
        assert portal.counters.by_status == {200: expected_requests}


# fast-bitrix24's call() warns "It's better to use get_all() with methods that end with
# .list" (a UserWarning); packing list calls into batch is exactly what is being tested.
@pytest.mark.filterwarnings("ignore:It's better to use get_all:UserWarning")
async def test_fast_bitrix24_call_packs_batches_without_503() -> None:
    async with FakePortal(products=130, images_per_product=3) as portal:  # rate 2, burst 50
        bx = BitrixAsync(str(portal.webhook_url), verbose=False)
        ids = portal.catalog.product_ids()
        images = await bx.call("catalog.productImage.list", [{"productId": p} for p in ids])
        expected = sorted(image.id for p in ids for image in portal.catalog.images(p))
        assert _ids(images) == expected
        assert len(expected) == 390
        assert portal.counters.by_method == {"batch": 3}
        assert portal.counters.commands == {"catalog.productimage.list": 130}
        assert portal.counters.rate_limited == 0
        assert portal.counters.by_status == {200: 3}


async def test_fast_bitrix24_get_all_many_products_paced() -> None:
    async with FakePortal(products=53, images_per_product=2, page_mode="offset") as portal:
        bx = BitrixAsync(str(portal.webhook_url), verbose=False)
        results = [
            await bx.get_all("catalog.productImage.list", {"productId": p})
            for p in portal.catalog.product_ids()
        ]
        assert [_ids(r) for r in results] == [
            [image.id for image in portal.catalog.images(p)] for p in portal.catalog.product_ids()
        ]
        # 53 requests against a 50-deep bucket: fast-bitrix24 paces itself, no 503.
        assert portal.counters.rate_limited == 0
