"""client.images end to end against the embedded portal: both page modes, list_many over
batch, writes that never duplicate, atomic downloads, and argument checks."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import pytest
from support import FAST_RETRY, PNG, UNLIMITED, partial_files, portal_process, webhook_client
from yarl import URL

import bitrix_images as bx
from bitrix_images._wire.commands import add_params, add_query
from bitrix_images._wire.converters import Converter
from bitrix_images._wire.naming import safe_name
from bitrix_images._wire.protocol import encode_batch, http_build_query
from bitrix_images.images import is_image
from bitrix_images.sync.listing import products
from bitrix_images.testing import INTERNAL_SERVER_ERROR, QUERY_LIMIT_EXCEEDED, FakePortal

SAMPLES = Path(__file__).parent / "samples"


async def collect(stream: AsyncIterator[bx.ProductImage], into: list[bx.ProductImage]) -> None:
    async for image in stream:
        into.append(image)


# --- list and the paginator -------------------------------------------------------------


@pytest.mark.parametrize(("mode", "requests"), [("source", 1), ("offset", 5)])
async def test_237_images_in_both_page_modes(mode: str, requests: int) -> None:
    async with FakePortal(products=1, images_per_product=0, rate=None, page_mode=mode) as portal:  # type: ignore[arg-type]
        pid = portal.catalog.add_product(images=237)
        async with webhook_client(portal) as client:
            images = [image async for image in client.images.list(pid)]
        assert portal.counters.by_method["catalog.productimage.list"] == requests
    ids = [image.id for image in images]
    assert len(set(ids)) == 237
    assert ids == [image.id for image in portal.catalog.images(pid)]
    assert all(image.product_id == pid for image in images)


async def test_pages_expose_total_and_next() -> None:
    async with FakePortal(
        products=1, images_per_product=120, rate=None, page_mode="offset"
    ) as portal:
        async with webhook_client(portal) as client:
            pages = [page async for page in client.images.list(1).pages()]
            assert [(p.start, p.next, p.total, len(p.items)) for p in pages] == [
                (0, 50, 120, 50),
                (50, 100, 120, 50),
                (100, None, 120, 20),
            ]
            # Resuming from a page's next picks up where it stopped.
            rest = [image async for image in client.images.list(1, start=100)]
            assert [i.id for i in rest] == [i.id for i in pages[2].items]
            assert "start=100" in repr(client.images.list(1, start=100))


async def test_source_mode_ignores_start_and_never_confirms(
    portal: FakePortal, client: bx.BitrixClient
) -> None:
    images = [image async for image in client.images.list(1, start=50)]
    assert len(images) == 3
    assert portal.counters.requests == 1
    assert portal.counters.calls[0].params["start"] == 50


async def test_select_leaves_other_fields_none(portal: FakePortal, client: bx.BitrixClient) -> None:
    images = [image async for image in client.images.list(1, select=["name", "product_id"])]
    assert images[0].name == "photo-1.png"
    assert images[0].product_id == 1
    assert images[0].download_url is None
    assert images[0].create_time is None
    assert portal.counters.calls[0].params["select"] == ["id", "name", "productId"]


async def test_a_page_that_repeats_raises_instead_of_looping(client: bx.BitrixClient) -> None:
    async def fetch(start: int) -> bx.Page[int]:
        return bx.Page(items=(start,), total=None, next=0)

    with pytest.raises(bx.MalformedResponse, match="next=0"):
        _ = [item async for item in bx.AsyncPaginator(fetch, method="x")]


async def test_the_docs_example_and_the_portal_decode_alike(portal: FakePortal) -> None:
    doc = json.loads((SAMPLES / "list_200.json").read_text())["result"]["productImages"][0]
    created = datetime.fromisoformat(doc["createTime"])
    pid = portal.catalog.add_product()
    stored = portal.catalog.add_image(
        pid, name="test.jpeg", content=PNG, type="MORE_PHOTO", created=created
    )
    async with webhook_client(portal) as client:
        (ours,) = [image async for image in client.images.list(pid)]
    assert ours.download_url is not None
    assert ours.detail_url is not None
    # The same image as the docs print it, with the ids and links this portal gave it.
    theirs = Converter(portal.origin).image(
        {
            **doc,
            "id": stored.id,
            "productId": pid,
            "downloadUrl": str(ours.download_url),
            "detailUrl": ours.detail_url.path,
        },
        method="m",
    )
    assert ours == theirs
    assert set(doc) == {"createTime", "detailUrl", "downloadUrl", "id", "name", "productId", "type"}
    assert ours.create_time == created
    assert ours.detail_url.origin() == portal.origin
    assert ours.download_url.is_absolute()


# --- list_many ---------------------------------------------------------------------------


async def test_list_many_1000_products_in_20_requests_lazily() -> None:
    async with FakePortal(products=1000, images_per_product=3, rate=None) as portal:
        consumed = 0
        produced = 0
        ahead: list[int] = []

        async def product_ids() -> AsyncIterator[int]:
            nonlocal produced
            for pid in range(1, 1001):
                produced += 1
                ahead.append(produced - consumed // 3)
                yield pid

        async with webhook_client(portal) as client:
            order = []
            async for image in client.images.list_many(product_ids()):
                consumed += 1
                order.append(image.product_id)
        assert portal.counters.requests == 20
        assert portal.counters.by_method["batch"] == 20
        assert consumed == 3000
        assert order == sorted(order)
        # Never more than the batches in flight (4 x 50) plus the one being yielded ahead.
        assert max(ahead) <= 5 * 50


async def test_list_many_offset_mode_pages_products_with_many_images() -> None:
    async with FakePortal(
        products=3, images_per_product=2, rate=None, page_mode="offset"
    ) as portal:
        big = portal.catalog.add_product(images=120)
        ids = [1, big, 2, 3, 1]
        async with webhook_client(portal) as client:
            got = [image async for image in client.images.list_many(ids)]
        expected = [i.id for pid in ids for i in portal.catalog.images(pid)]
        assert [i.id for i in got] == expected
        # One batch for all five commands, then two more for the big product's pages.
        assert portal.counters.by_method["batch"] == 3


async def test_list_many_takes_plain_iterables_and_select(
    portal: FakePortal, client: bx.BitrixClient
) -> None:
    got = [image async for image in client.images.list_many(iter([2, 1]), select=["name"])]
    assert [i.product_id for i in got] == [None] * 6
    assert [i.name for i in got[:3]] == [i.name for i in portal.catalog.images(2)]
    assert [image async for image in client.images.list_many([])] == []
    assert portal.counters.requests == 1


async def test_list_many_retries_a_retryable_command_and_raises_for_a_fatal_one() -> None:
    async with FakePortal(products=120, images_per_product=2, rate=None) as portal:
        portal.catalog.deny_read(30)
        portal.inject(
            "command_error", times=3, method="catalog.productImage.list", body=QUERY_LIMIT_EXCEEDED
        )
        got: list[bx.ProductImage] = []
        async with webhook_client(portal) as client:
            stream = client.images.list_many(range(1, 121))
            with pytest.raises(bx.BatchError) as info:
                await collect(stream, got)
        # Everything before product 30 was yielded, in order, and nothing after it.
        assert [i.id for i in got] == [
            i.id for pid in range(1, 30) for i in portal.catalog.images(pid)
        ]
        error = info.value
        assert "product 30" in str(error)
        assert error.product_id == 30
        (command_error,) = error.errors.values()
        assert isinstance(command_error, bx.AccessDenied)
        assert command_error.code == 200040300010


async def test_list_many_gives_up_on_a_command_that_keeps_failing() -> None:
    async with FakePortal(products=10, images_per_product=1, rate=None) as portal:
        portal.inject(
            "command_error",
            times=100,
            method="catalog.productImage.list",
            body=INTERNAL_SERVER_ERROR,
        )
        async with webhook_client(portal) as client:
            with pytest.raises(bx.BatchError) as info:
                _ = [image async for image in client.images.list_many([1, 2])]
        assert info.value.attempts == FAST_RETRY.max_attempts
        assert all(isinstance(e, bx.ServerError) for e in info.value.errors.values())


def _batch_answer(results: dict[str, object]) -> dict[str, object]:
    return {
        "result": {
            "result": results,
            "result_error": [],
            "result_total": [],
            "result_next": [],
            "result_time": [],
        },
    }


async def test_list_many_fails_a_product_with_a_malformed_image_after_those_before_it() -> None:
    async with FakePortal(products=3, images_per_product=1, rate=None) as portal:
        good = {"id": 1, "name": "a.png", "productId": 1}
        bad = {"id": "not a number", "name": "b.png", "productId": 2}
        after = {"id": 3, "name": "c.png", "productId": 3}
        portal.inject(
            "error",
            method="batch",
            status=200,
            body=_batch_answer(
                {
                    "p0": {"productImages": [good]},
                    "p1": {"productImages": [after, bad]},
                    "p2": {"productImages": [after]},
                }
            ),
        )
        got: list[bx.ProductImage] = []
        async with webhook_client(portal) as client:
            with pytest.raises(bx.BatchError) as info:
                await collect(client.images.list_many([1, 2, 3]), got)
    # Product 1 whole, nothing of product 2 (not even its good image), nothing after it.
    assert [image.id for image in got] == [1]
    error = info.value
    assert error.product_id == 2
    assert "product 2" in str(error)
    (malformed,) = error.errors.values()
    assert isinstance(malformed, bx.MalformedResponse)
    assert "id" in str(malformed)


async def test_a_job_reports_the_product_with_a_malformed_image_and_goes_on() -> None:
    async with FakePortal(products=3, images_per_product=1, rate=None) as portal:
        bad = {"id": 7, "name": "b.png", "productId": 2, "createTime": "yesterday"}
        portal.inject(
            "error",
            method="batch",
            status=200,
            body=_batch_answer({"p0": {"productImages": []}, "p1": {"productImages": [bad]}}),
        )
        async with webhook_client(portal) as client:
            listed = [entry async for entry in products(client, [1, 2, 3])]
        wanted = [image.id for image in portal.catalog.images(3)]
    assert [entry.product_id for entry in listed] == [1, 2, 3]
    assert listed[0].images == ()
    assert listed[0].error is None
    assert isinstance(listed[1].error, bx.MalformedResponse)
    assert "create_time" in str(listed[1].error)
    assert [image.id for image in listed[2].images] == wanted  # listed again, whole


async def test_list_many_retries_whole_batches(portal: FakePortal, client: bx.BitrixClient) -> None:
    portal.inject("html", status=502, method="batch")
    portal.inject("error", status=503, body=QUERY_LIMIT_EXCEEDED, method="batch")
    got = [image async for image in client.images.list_many(range(1, 21))]
    assert len(got) == 60
    assert portal.counters.by_method["batch"] == 3


async def test_list_many_stops_cleanly_when_the_consumer_breaks() -> None:
    async with FakePortal(products=2000, images_per_product=1, rate=None) as portal:
        async with webhook_client(portal) as client:
            async for image in client.images.list_many(range(1, 2001)):
                if image.product_id == 10:
                    break
            await asyncio.sleep(0.05)
        assert portal.counters.by_method["batch"] <= 5


async def test_list_many_rejects_a_bad_id_before_sending_its_batch(
    portal: FakePortal, client: bx.BitrixClient
) -> None:
    with pytest.raises(TypeError, match="product id"):
        _ = [image async for image in client.images.list_many([1, 2, "3"])]  # type: ignore[list-item]
    assert portal.counters.requests == 0
    with pytest.raises(TypeError):
        _ = [image async for image in client.images.list_many("123")]  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _ = [image async for image in client.images.list_many(5)]  # type: ignore[arg-type]


async def test_list_many_memory_does_not_grow_with_the_catalog() -> None:
    # The portal runs in its own process, so that only the client's allocations are traced.
    # Five times the products must not need more memory: the images are streamed, not kept
    # (8,000 more images held would add several MiB). benchmarks/ W3 shows it at 1,000,000.
    async with portal_process(
        "--products", "10000", "--images-per-product", "1", "--rate", "0"
    ) as url:
        async with bx.BitrixClient.from_webhook(
            url, retry=FAST_RETRY, rate_limit=UNLIMITED
        ) as client:
            peaks = []
            for products in (2_000, 10_000):
                gc.collect()
                tracemalloc.start()
                try:
                    count = 0
                    async for _image in client.images.list_many(range(1, products + 1)):
                        count += 1
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                assert count == products
                peaks.append(peak)
            assert client.stats.requests == 40 + 200
    small, large = peaks
    assert large < small + 1024 * 1024, peaks
    assert large < 30 * 1024 * 1024


# --- get, fields, add, delete ------------------------------------------------------------


async def test_get_and_fields(portal: FakePortal, client: bx.BitrixClient) -> None:
    image = await client.images.get(2, 4)
    assert (image.id, image.product_id, image.name) == (4, 2, "photo-1.png")
    fields = await client.images.fields()
    assert fields["productId"].is_required
    assert fields["id"].is_read_only


async def test_add_from_path_and_delete(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    source = tmp_path / "front.png"
    source.write_bytes(PNG)
    image = await client.images.add(3, source, type=bx.ImageType.DETAIL_PICTURE)
    assert image.name == "front.png"
    assert image.type is bx.ImageType.DETAIL_PICTURE
    again = await client.images.add(3, str(source), name="other.png")
    assert again.type is bx.ImageType.MORE_PHOTO
    stored = {i.id: i for i in portal.catalog.images(3)}
    assert stored[image.id].content == PNG
    assert stored[again.id].name == "other.png"
    await client.images.delete(3, again.id)
    assert again.id not in {i.id for i in portal.catalog.images(3)}
    with pytest.raises(bx.NotFound):
        await client.images.delete(3, again.id)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((True, PNG), {"name": "a.png"}, TypeError),
        (("1", PNG), {"name": "a.png"}, TypeError),
        ((0, PNG), {"name": "a.png"}, ValueError),
        ((1, PNG), {}, ValueError),
        ((1, b"GIF87a-but-text"), {"name": "a.txt"}, None),
        ((1, b"hello world"), {"name": "a.txt"}, ValueError),
        ((1, PNG), {"name": ""}, ValueError),
        ((1, PNG), {"name": "../a.png"}, ValueError),
        ((1, PNG), {"name": "a.png", "type": "MORE_PHOTO"}, TypeError),
        ((1, 42), {"name": "a.png"}, TypeError),
        ((1, "/no/such/file.png"), {}, ValueError),
    ],
)
async def test_add_checks_arguments_before_any_request(
    portal: FakePortal,
    client: bx.BitrixClient,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    error: type | None,
) -> None:
    if error is None:
        await client.images.add(*args, **kwargs)  # type: ignore[arg-type]
        return
    with pytest.raises(error):
        await client.images.add(*args, **kwargs)  # type: ignore[arg-type]
    assert portal.counters.requests == 0


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.images.get(1, True), TypeError),
        (lambda c: c.images.get(-1, 1), ValueError),
        (lambda c: c.images.delete(1, 0), ValueError),
        (lambda c: c.images.delete(1.5, 1), TypeError),
    ],
)
async def test_ids_are_checked_before_any_request(
    portal: FakePortal, client: bx.BitrixClient, call: object, error: type
) -> None:
    with pytest.raises(error):
        await call(client)  # type: ignore[operator]
    assert portal.counters.requests == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"select": ["bogus"]}, ValueError),
        ({"select": "name"}, TypeError),
        ({"select": [1]}, TypeError),
        ({"start": -1}, ValueError),
        ({"start": "0"}, TypeError),
    ],
)
def test_list_checks_arguments(
    client: bx.BitrixClient, kwargs: dict[str, object], error: type
) -> None:
    with pytest.raises(error):
        client.images.list(1, **kwargs)  # type: ignore[arg-type]


def bmp(dib: int, width: int = 1, height: int = 1, planes: int = 1) -> bytes:
    size = 14 + dib
    head = b"BM" + size.to_bytes(4, "little") + bytes(4) + size.to_bytes(4, "little")
    if dib == 12:
        sizes = width.to_bytes(2, "little") + height.to_bytes(2, "little")
        return head + dib.to_bytes(4, "little") + sizes + planes.to_bytes(2, "little")
    sizes = width.to_bytes(4, "little") + height.to_bytes(4, "little", signed=True)
    return head + dib.to_bytes(4, "little") + sizes + planes.to_bytes(2, "little") + bytes(16)


@pytest.mark.parametrize(
    "content",
    [
        PNG,
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"\xff\xd8\xff\xdb\x00\x43",
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
        b"GIF87a\x10\x00\x20\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"RIFF\x00\x00\x00\x00WEBPVP8L",
        bmp(40),
        bmp(124, height=-5),
        bmp(12),
    ],
)
def test_image_headers(content: bytes) -> None:
    assert is_image(content)


@pytest.mark.parametrize(
    "content",
    [
        b"<svg",
        b"BM secret: api_key=0123456789abcdef0123456789",
        b"BM\x00",
        bmp(41),
        bmp(40, width=0),
        bmp(40, height=0),
        bmp(40, planes=3),
        bmp(12, width=0),
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\ntext after the signature",
        PNG[:16] + bytes(8),  # IHDR of 0x0
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\x00text",
        b"GIF89a",
        b"GIF89a\x00\x00\x01\x00",
        b"RIFF\x00\x00\x00\x00WEBP",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
    ],
)
def test_what_only_starts_like_an_image_is_not_one(content: bytes) -> None:
    assert not is_image(content)


def test_image_magic() -> None:
    assert safe_name(bx.ProductImage(id=5, name="../../x.png")) == "x.png"
    assert safe_name(bx.ProductImage(id=5, name="..")) == "image-5"
    assert safe_name(bx.ProductImage(id=5)) == "image-5"


# --- download ----------------------------------------------------------------------------


async def test_download_into_a_directory_and_to_a_path(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 2)
    written = await client.images.download(image, tmp_path)
    assert written == tmp_path / "photo-2.png"
    assert written.read_bytes() == portal.catalog.images(1)[1].content
    other = await client.images.download(image, str(tmp_path / "renamed.png"))
    assert other.read_bytes() == written.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo-2.png", "renamed.png"]


async def test_download_cut_mid_body_is_retried(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 1)
    portal.inject("cut_body", method="download")
    written = await client.images.download(image, tmp_path)
    assert written.read_bytes() == portal.catalog.images(1)[0].content
    assert [p.name for p in tmp_path.iterdir()] == ["photo-1.png"]


async def test_download_that_keeps_failing_leaves_no_file(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 1)
    portal.inject("cut_body", times=100, method="download")
    with pytest.raises(bx.TransportError) as info:
        await client.images.download(image, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert str(image.download_url) not in str(info.value)
    assert "token" not in str(info.value)


async def test_download_cancelled_leaves_no_file(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 1)
    portal.inject("delay", delay=5.0, method="download")
    task = asyncio.ensure_future(client.images.download(image, tmp_path))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(tmp_path.iterdir()) == []


async def test_download_error_answer_is_classified(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 1)
    assert image.download_url is not None
    forged = bx.ProductImage(
        id=1, name="x.png", download_url=image.download_url.update_query(token="forged")
    )
    with pytest.raises(bx.BitrixError) as info:
        await client.images.download(forged, tmp_path)
    assert info.value.status is not None
    assert info.value.status >= 400
    assert list(tmp_path.iterdir()) == []


async def test_download_refuses_another_origin_and_bad_arguments(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    foreign = bx.ProductImage(
        id=1, name="a.png", download_url=URL("https://evil.example/rest/download?token=x")
    )
    with pytest.raises(ValueError, match=r"evil\.example"):
        await client.images.download(foreign, tmp_path)
    with pytest.raises(ValueError, match="download_url"):
        await client.images.download(bx.ProductImage(id=1), tmp_path)
    with pytest.raises(TypeError):
        await client.images.download("image", tmp_path)  # type: ignore[arg-type]
    image = await client.images.get(1, 1)
    with pytest.raises(TypeError):
        await client.images.download(image, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no such directory"):
        await client.images.download(image, tmp_path / "missing" / "x.png")
    assert portal.counters.by_method["download"] == 0


async def test_delete_answer_other_than_true_is_malformed(
    portal: FakePortal, client: bx.BitrixClient
) -> None:
    # A write whose answer is not the documented `true` must not pass silently.
    from bitrix_images.images import DELETE

    envelope_result = await client.call("catalog.productImage.list", {"productId": 1})
    assert envelope_result
    with pytest.raises(bx.NotFound):
        await client.images.delete(1, 9999)
    assert DELETE == "catalog.productImage.delete"


def test_unlimited_client_uses_no_bucket() -> None:
    assert math.isinf(UNLIMITED.rate)


async def test_a_large_download_spills_to_disk(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 MiB: past the 4 MiB kept in memory, and half of it (cut_body) is past it too.
    content = PNG + bytes(10 * 1024 * 1024)
    stored = portal.catalog.add_image(1, name="large.png", content=content)
    image = await client.images.get(1, stored.id)
    portal.inject("cut_body", method="download")  # the first attempt dies after spilling
    written = await client.images.download(image, tmp_path)
    assert written.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["large.png"]


async def test_a_failed_rename_leaves_no_temporary_file(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 1)
    (tmp_path / "photo-1.png" / "inside").mkdir(parents=True)  # the name is a directory
    with pytest.raises(OSError):  # noqa: PT011 -- the platform's own error for this
        await client.images.download(image, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["photo-1.png"]
    assert (tmp_path / "photo-1.png").is_dir()


async def test_a_download_that_need_not_be_durable(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 1)
    written = await client.images.download(image, tmp_path, durable=False)
    assert written.read_bytes() == portal.catalog.images(1)[0].content
    assert [p.name for p in tmp_path.iterdir()] == ["photo-1.png"]
    with pytest.raises(TypeError, match="durable"):
        await client.images.download(image, tmp_path, durable="yes")  # type: ignore[arg-type]


# --- the download's file: names, temporary files, links, origins -------------------------------


async def test_a_legal_final_name_of_255_bytes_downloads(
    client: bx.BitrixClient, tmp_path: Path
) -> None:
    # The temporary file's name is short, whatever the final one: a predictable
    # ".<name>.<pid>-<n>.part" beside a 255-byte name was too long for the file system.
    image = await client.images.get(1, 1)
    target = tmp_path / ("a" * 251 + ".png")
    assert await client.images.download(image, target) == target
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    # The finished file has the mode a plain open() gives, not the temporary file's 0600.
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


async def test_a_long_or_hostile_name_is_cut_by_bytes_and_stays_apart(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    long_name = "фото" * 60 + ".png"  # 480 bytes of UTF-8: over NAME_MAX (255)
    first = portal.catalog.add_image(1, name=long_name, content=PNG)
    second = portal.catalog.add_image(1, name=long_name[:-4] + "x.png", content=PNG)
    hostile = portal.catalog.add_image(1, name="a\\..\\bc.png", content=PNG)
    written = []
    for stored in (first, second, hostile):
        image = await client.images.get(1, stored.id)
        written.append(await client.images.download(image, tmp_path))
    for path in written[:2]:
        assert len(path.name.encode()) <= 255 - 40  # room for an "<id>-" in front
        assert path.name.endswith(".png")
        assert path.name.startswith("фото")
    assert written[0].name != written[1].name  # the image id keeps them apart
    assert written[2].name == "bc.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_safe_name_keeps_ordinary_names_and_cuts_at_a_character_boundary() -> None:
    assert safe_name(bx.ProductImage(id=7, name="photo 1.JPG")) == "photo 1.JPG"
    assert safe_name(bx.ProductImage(id=7, name="a\\b\x00\x1f\x7fc.png")) == "bc.png"
    assert safe_name(bx.ProductImage(id=7, name="dir\\..")) == "image-7"
    cut = safe_name(bx.ProductImage(id=7, name="é" * 300))
    assert cut.endswith("-7")
    assert len(cut.encode()) <= 215
    assert set(cut[:-2]) == {"é"}
    # An "extension" too long to be one is not kept whole.
    odd = safe_name(bx.ProductImage(id=7, name="x." + "y" * 300))
    assert odd.endswith("-7")
    assert len(odd.encode()) <= 215


async def test_a_symlinked_target_or_folder_is_refused(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.png"
    victim.write_bytes(b"keep")
    link = tmp_path / "photo.png"
    link.symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link") as info:
        await client.images.download(image, link)
    assert info.value.filename == str(link)
    folder = tmp_path / "product"
    folder.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OSError, match="symbolic link") as info:
        await client.images.download(image, folder)
    assert info.value.filename == str(folder)
    # Named with a trailing separator (a shell's completion adds one), a link to a folder
    # is still the link it is.
    with pytest.raises(OSError, match="symbolic link") as info:
        await client.images.download(image, f"{folder}/")
    assert info.value.filename == str(folder)
    # A real folder whose file of the image's name is a link.
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / safe_name(image)).symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        await client.images.download(image, tmp_path / "real")
    assert victim.read_bytes() == b"keep"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim.png"]
    assert portal.counters.by_method["download"] == 0


async def test_the_temporary_file_is_private_and_unguessable(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path
) -> None:
    image = await client.images.get(1, 1)
    portal.inject("delay", method="download", delay=30.0)
    task = asyncio.ensure_future(client.images.download(image, tmp_path, via="rest"))
    try:
        await asyncio.wait_for(_until(lambda: portal.counters.in_flight > 0), timeout=30)
        (part,) = partial_files(tmp_path)
        assert part.stat().st_mode & 0o777 == 0o600
        assert image.name is not None
        assert image.name not in part.name
        assert len(part.name.encode()) < 40  # .bxi-<host>-<pid>-<random>.part
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert partial_files(tmp_path) == []


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_an_add_command_is_the_php_query_and_its_memory_is_bounded() -> None:
    for size in (0, 1, 2, 3, 1000, 3 * 2**20 + 1):
        content = PNG + bytes(range(256)) * (size // 256) + b"\xfb\xff" * (size % 7)
        name = "a b+ф.png"
        expected = http_build_query(add_params(1, name, content, bx.ImageType.DETAIL_PICTURE))
        assert add_query(1, name, content, bx.ImageType.DETAIL_PICTURE) == expected
    with pytest.raises(ValueError, match=r"'a\.txt' is not a JPEG"):
        add_query(1, "a.txt", b"text", bx.ImageType.MORE_PHOTO)
    # 8 MiB: the old encoding (quote_plus of the whole base64) peaked at 16 times the size.
    size = 8 * 2**20
    content = PNG + os.urandom(size)
    tracemalloc.start()
    try:
        query = add_query(1, "a.png", content, bx.ImageType.MORE_PHOTO)
        encode_batch({"c0": ("catalog.productImage.add", query)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * size
