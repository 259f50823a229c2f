"""``bitrix_images.upload`` over loopback: a folder of photos onto products, never twice."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import attrs
import pytest
from support import FAST_RETRY, PNG_HEAD, UNLIMITED

import bitrix_images as bx
from bitrix_images.sync.upload.journal import (
    JOURNAL_NAME,
    Entry,
    FolderLock,
    Journal,
    LockedError,
)
from bitrix_images.sync.upload.scan import ImageFile, read_image
from bitrix_images.testing import INVALID_CREDENTIALS, OPERATION_TIME_LIMIT, FakePortal

REFUSED = {
    "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
    "error_description": "Method is not allowed for batch usage",
}
SERVER_ERROR = {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}


def png(tag: str, size: int = 0) -> bytes:
    return PNG_HEAD + tag.encode() + b"\0" * size


def make_src(root: Path, layout: dict[int, list[str]], size: int = 0) -> Path:
    for product_id, names in layout.items():
        folder = root / str(product_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_bytes(png(f"{product_id}/{name}", size))
    return root


def names_on(portal: FakePortal, product_id: int) -> Counter[str]:
    return Counter(image.name for image in portal.catalog.images(product_id))


def client_for(portal: FakePortal) -> bx.BitrixClient:
    return bx.BitrixClient.from_webhook(portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED)


async def test_upload_twice_adds_once_and_then_only_lists(tmp_path: Path) -> None:
    layout = {pid: [f"new-{pid}-{n}.png" for n in range(30)] for pid in range(1, 6)}
    src = make_src(tmp_path / "src", layout)
    async with FakePortal(products=5, images_per_product=2, rate=None) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src)
        assert (result.products, result.files, result.added, result.present) == (5, 150, 150, 0)
        assert result.failed == result.not_images == 0
        # 150 adds in batches of at most 50: three batch requests after one listing.
        assert portal.counters.commands["catalog.productimage.add"] == 150
        assert portal.counters.by_method["batch"] == 1 + 3
        for pid, names in layout.items():
            on_portal = names_on(portal, pid)
            assert all(on_portal[name] == 1 for name in names)
            assert sum(on_portal.values()) == 2 + 30
        added = portal.catalog.images(3)[-1]
        content = (src / "3" / added.name).read_bytes()
        assert added.content == content
        assert added.type == "MORE_PHOTO"

        portal.counters.reset()
        async with client_for(portal) as client:
            again = await bx.upload(client, src)
        assert (again.added, again.present) == (0, 150)
        # The second run sends only list requests.
        assert set(portal.counters.commands) == {"catalog.productimage.list"}
        assert set(portal.counters.by_method) == {"batch"}
        assert again.requests == portal.counters.requests == 1
        assert "0 added, 150 already there" in again.summary()


async def test_detail_and_preview_prefixes_and_non_images(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["detail@front.png", "preview@small.png", "more.png"]})
    (src / "1" / "notes.txt").write_text("not an image")
    (src / "1" / ".DS_Store").write_bytes(b"\0\0")
    (src / "readme.md").write_text("a stray file")
    warnings = io.StringIO()
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src, warnings=warnings)
        kinds = {image.name: image.type for image in portal.catalog.images(1)}
    assert kinds == {
        "front.png": "DETAIL_PICTURE",
        "small.png": "PREVIEW_PICTURE",
        "more.png": "MORE_PHOTO",
    }
    assert (result.added, result.not_images) == (3, 1)
    assert "1/notes.txt: not a JPEG, PNG, GIF, WEBP or BMP image, skipped" in warnings.getvalue()
    assert "readme.md: not a product folder" in warnings.getvalue()
    assert ".DS_Store" not in warnings.getvalue()
    assert "1 not images, skipped" in result.summary()


async def test_dry_run_and_prune(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=3, rate=None) as portal:
        keep = portal.catalog.images(1)[0].name
        src = make_src(tmp_path, {1: [keep, "added.png"], 2: []})
        async with client_for(portal) as client:
            plan = await bx.upload(client, src, prune=True, dry_run=True)
            assert portal.counters.commands.keys() == {"catalog.productimage.list"}
            assert plan.dry_run
            # Product 2's folder holds no image: prune leaves the product alone.
            assert (plan.added, plan.removed, plan.present) == (1, 2, 1)
            assert plan.planned[0] == f"= 1/{keep}"
            assert "+ 1/added.png" in plan.planned
            gone = [image for image in portal.catalog.images(1) if image.name != keep]
            assert plan.planned[1:3] == tuple(f"- 1/{i.name} (id {i.id})" for i in gone)
            assert "to add" in plan.summary()
            assert "2 to delete" in plan.summary()
            assert portal.catalog.image_count() == 6

            done = await bx.upload(client, src, prune=True)
        assert (done.added, done.removed) == (1, 2)
        assert names_on(portal, 1) == Counter({keep: 1, "added.png": 1})
        assert sum(names_on(portal, 2).values()) == 3


def batch_kinds(portal: FakePortal) -> list[tuple[str, frozenset[int]]]:
    """Each batch request the portal saw: its commands' method, and the products named."""
    seen = []
    for call in portal.counters.calls:
        if call.method != "batch":
            continue
        commands = call.params["cmd"]
        assert isinstance(commands, dict)
        methods = {str(command).split("?")[0].lower() for command in commands.values()}
        (method,) = methods
        products = frozenset(
            int(
                str(command)
                .split("roductId%5D=" if "add" in method else "productId=")[1]
                .split("&")[0]
            )
            for command in commands.values()
        )
        seen.append((method.rsplit(".", 1)[-1], products))
    return seen


async def test_a_lost_batch_answer_is_reconciled_by_listing(tmp_path: Path) -> None:
    layout = {pid: [f"p{pid}-{n}.png" for n in range(20)] for pid in range(1, 5)}
    src = make_src(tmp_path, layout)
    async with FakePortal(products=4, images_per_product=1, rate=None) as portal:
        # The listing passes; the first batch of adds is applied and its answer is lost.
        portal.inject("delay", method="batch", delay=0.0)
        portal.inject("drop", method="batch")
        async with client_for(portal) as client:
            # The portal answers at once: no add is still running when it is listed again.
            result = await bx.upload(client, src, concurrency=1, settle_after=0)
        for pid, names in layout.items():
            on_portal = names_on(portal, pid)
            assert all(on_portal[name] == 1 for name in names), pid
            assert sum(on_portal.values()) == 21
        assert (result.added, result.failed) == (80, 0)
        # Listed, 50 adds (products 1-3, answer lost), 30 adds, then products 1-3 listed
        # again: everything was there, so nothing was resent.
        assert batch_kinds(portal) == [
            ("list", frozenset({1, 2, 3, 4})),
            ("add", frozenset({1, 2, 3})),
            ("add", frozenset({3, 4})),
            ("list", frozenset({1, 2, 3})),
        ]


async def test_a_lost_single_add_is_reconciled_by_listing(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png", "b.png"], 2: ["c.png"]})
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        portal.inject("truncated", method="catalog.productImage.add")
        async with client_for(portal) as client:
            result = await bx.upload(client, src, pack=False, concurrency=1, settle_after=0)
        assert names_on(portal, 1) == Counter({"a.png": 1, "b.png": 1})
        assert names_on(portal, 2) == Counter({"c.png": 1})
        assert (result.added, result.failed) == (3, 0)
        assert portal.counters.by_method["catalog.productimage.add"] == 3


async def test_a_server_error_inside_a_batch_is_reconciled(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png", "b.png"], 2: ["c.png"]})
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        portal.inject("command_error", method="catalog.productImage.add", body=SERVER_ERROR)
        async with client_for(portal) as client:
            result = await bx.upload(client, src)
        assert names_on(portal, 1) == Counter({"a.png": 1, "b.png": 1})
        assert (result.added, result.failed) == (3, 0)


async def test_a_body_limit_shrinks_the_batches(tmp_path: Path) -> None:
    layout = {pid: [f"p{pid}-{n}.png" for n in range(25)] for pid in range(1, 5)}
    src = make_src(tmp_path, layout, size=3000)
    async with FakePortal(
        products=4, images_per_product=0, rate=None, max_request_body=40_000
    ) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src)
        for pid, names in layout.items():
            assert names_on(portal, pid) == Counter(dict.fromkeys(names, 1))
        assert (result.added, result.failed) == (100, 0)
        assert portal.counters.by_status[413] >= 1
        assert result.packed
        # Still packed: far fewer requests than one add each.
        assert portal.counters.by_method["batch"] < 40


async def test_a_file_over_the_body_limit_fails_alone(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["small.png"]})
    (src / "1" / "huge.png").write_bytes(png("huge", 50_000))
    warnings = io.StringIO()
    async with FakePortal(
        products=1, images_per_product=0, rate=None, max_request_body=20_000
    ) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src, warnings=warnings)
        assert names_on(portal, 1) == Counter({"small.png": 1})
    assert (result.added, result.failed) == (1, 1)
    assert "1/huge.png: larger than the portal accepts in one request" in warnings.getvalue()


async def test_a_portal_refusing_packed_adds_gets_one_per_request(tmp_path: Path) -> None:
    layout = {pid: [f"p{pid}-{n}.png" for n in range(10)] for pid in range(1, 4)}
    src = make_src(tmp_path, layout)
    warnings = io.StringIO()
    async with FakePortal(products=3, images_per_product=0, rate=None) as portal:
        portal.inject("command_error", method="catalog.productImage.add", times=1000, body=REFUSED)
        async with client_for(portal) as client:
            result = await bx.upload(client, src, warnings=warnings)
        for pid, names in layout.items():
            assert names_on(portal, pid) == Counter(dict.fromkeys(names, 1))
        assert (result.added, result.failed, result.packed) == (30, 0, False)
        assert portal.counters.by_method["catalog.productimage.add"] == 30
    assert "refuses adds inside batch requests" in warnings.getvalue()
    assert "one add a request" in result.summary()


LOAD = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
GONE = {"error": "NOT_FOUND", "error_description": "Image does not exist"}
NO_AUTH = {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}
DENIED = {"error": "ACCESS_DENIED", "error_description": "Access denied"}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"prune": 1}, TypeError),
        ({"dry_run": None}, TypeError),
        ({"max_request_bytes": 0}, ValueError),
        ({"concurrency": True}, ValueError),
        ({"max_delete": -1}, ValueError),
        ({"max_file_bytes": 1.5}, ValueError),
        ({"settle_after": float("nan")}, ValueError),
        ({"lock_wait": True}, ValueError),
    ],
)
async def test_bad_options_fail_before_any_request(
    tmp_path: Path, options: dict[str, object], error: type[Exception]
) -> None:
    async with FakePortal(products=1, rate=None) as portal:
        async with client_for(portal) as client:
            with pytest.raises(error):
                await bx.upload(client, tmp_path, **options)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="src must be"):
                await bx.upload(client, 42)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="not a directory"):
                await bx.upload(client, tmp_path / "nowhere")
        assert portal.counters.requests == 0


async def test_odd_folders_are_reported_and_the_rest_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = make_src(tmp_path, {1: ["detail@a.png", "a.png", "detail@", "b.png"]})
    (src / ".hidden").mkdir()
    (src / "1" / "sub").mkdir()
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src)  # warnings to the logger
        assert sorted(names_on(portal, 1)) == ["a.png", "b.png"]
    assert (result.added, result.failed) == (2, 2)
    text = caplog.text
    assert "another file of this folder is named 'a.png' too" in text
    assert "1/sub: not a regular file (a link, a FIFO, a device), skipped" in text
    assert "nothing after the 'detail@' prefix" in text
    assert ".hidden" not in text


@pytest.mark.parametrize("refusal", [LOAD, OPERATION_TIME_LIMIT])
async def test_load_refusals_inside_a_batch_are_resent(
    tmp_path: Path, refusal: dict[str, object]
) -> None:
    src = make_src(tmp_path, {1: ["a.png", "b.png"]})
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        portal.inject("command_error", method="catalog.productImage.add", body=refusal, times=2)
        async with client_for(portal) as client:
            result = await bx.upload(client, src)
        assert names_on(portal, 1) == Counter({"a.png": 1, "b.png": 1})
        assert result.added == 2


async def test_endless_load_refusals_give_up_with_a_warning(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png", "b.png"]})
    warnings = io.StringIO()
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        portal.inject("command_error", method="catalog.productImage.add", body=LOAD, times=99)
        async with client_for(portal) as client:
            result = await bx.upload(client, src, warnings=warnings)
        assert names_on(portal, 1) == Counter()
    assert (result.added, result.failed) == (0, 2)
    assert "1/a.png: Too many requests; run again later" in warnings.getvalue()


async def test_answers_lost_every_time_give_up_without_resending_blindly(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png"]})
    warnings = io.StringIO()
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        portal.inject("reset", method="catalog.productImage.add", times=99)
        async with client_for(portal) as client:
            result = await bx.upload(client, src, pack=False, warnings=warnings, settle_after=0)
        # One add per round, each after a fresh listing: never two without one between.
        calls = [call.method for call in portal.counters.calls]
        assert all(
            before != "catalog.productimage.add"
            for before, after in itertools.pairwise(calls)
            if after == "catalog.productimage.add"
        )
    assert (result.added, result.failed) == (0, 1)
    assert "kept getting lost" in warnings.getvalue()


async def test_prune_one_per_request_and_an_image_already_gone(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        src = make_src(tmp_path, {1: ["keep.png"], 2: ["keep.png"]})
        portal.inject("drop", method="catalog.productImage.delete")  # applied, answer lost
        portal.inject("error", method="catalog.productImage.delete", status=400, body=GONE)
        async with client_for(portal) as client:
            result = await bx.upload(client, src, prune=True, pack=False, concurrency=1)
        # The lost one is seen gone, the one "not found" still there is deleted again.
        assert (result.removed, portal.catalog.image_count()) == (4, 2)


async def test_a_delete_in_a_batch_answered_not_found_is_checked(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=2, rate=None) as portal:
        src = make_src(tmp_path, {1: ["keep.png"]})
        portal.inject("command_error", method="catalog.productImage.delete", body=GONE)
        async with client_for(portal) as client:
            result = await bx.upload(client, src, prune=True)
        assert (result.removed, portal.catalog.image_count()) == (2, 1)


async def test_an_auth_error_stops_the_run(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png", "b.png"]})
    finished: list[bx.UploadResult] = []
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        portal.inject("command_error", method="catalog.productImage.add", body=NO_AUTH)
        async with client_for(portal) as client:
            with pytest.raises(bx.AuthError):
                await bx.upload(client, src, on_finish=finished.append)
        # Both answers came back (one refused, one added): neither is left unsure in the
        # journal, so the next run has nothing to settle and adds at once.
        assert (src / JOURNAL_NAME).read_text() == ""
        assert (finished[0].added, finished[0].failed) == (1, 1)
        assert portal.catalog.image_count() == 1
        portal.inject("error", method="catalog.productImage.add", status=401, body=NO_AUTH)
        async with client_for(portal) as client:
            with pytest.raises(bx.AuthError):
                await bx.upload(client, src, pack=False, on_finish=finished.append)
        assert (src / JOURNAL_NAME).read_text() == ""
        assert (finished[1].added, finished[1].failed) == (0, 1)


async def test_a_file_gone_before_its_turn_is_a_failure(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png", "b.png"]})
    warnings = io.StringIO()
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            original = client.images.list_products

            def list_then_remove(*args: object, **kwargs: object) -> object:
                (src / "1" / "a.png").unlink(missing_ok=True)
                return original(*args, **kwargs)  # type: ignore[arg-type]

            client.images.list_products = list_then_remove  # type: ignore[method-assign,assignment]
            packed = await bx.upload(client, src, warnings=warnings)
            (src / "1" / "a.png").write_bytes(png("a"))
            alone = await bx.upload(client, src, pack=False, warnings=warnings)
    assert (packed.added, packed.failed) == (1, 1)
    assert (alone.added, alone.failed) == (0, 1)
    assert "1/a.png: " in warnings.getvalue()


async def test_a_whole_batch_refused_falls_back_and_an_auth_error_stops(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png", "b.png"]})
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        portal.inject("delay", method="batch", delay=0.0)  # the listing passes
        portal.inject("error", method="batch", status=400, body=REFUSED)
        async with client_for(portal) as client:
            result = await bx.upload(client, src)
        assert (result.added, result.packed) == (2, False)
        assert names_on(portal, 1) == Counter({"a.png": 1, "b.png": 1})

        (src / "1" / "c.png").write_bytes(png("c"))
        (src / "1" / "d.png").write_bytes(png("d"))
        portal.inject("delay", method="batch", delay=0.0)
        portal.inject("error", method="batch", status=401, body=NO_AUTH)
        async with client_for(portal) as client:
            with pytest.raises(bx.AuthError):
                await bx.upload(client, src)


async def test_a_batch_of_adds_refused_whole_is_settled_by_listing(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png", "b.png"]})
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        portal.inject("delay", method="batch", delay=0.0)  # the listing passes
        portal.inject("error", method="batch", status=403, body=DENIED)
        async with client_for(portal) as client:
            result = await bx.upload(client, src)
        assert (result.added, result.failed) == (2, 0)
        assert names_on(portal, 1) == Counter({"a.png": 1, "b.png": 1})
        # Listed, refused, listed again (nothing was there), then sent again.
        assert [kind for kind, _ in batch_kinds(portal)] == ["list", "add", "list", "add"]


async def test_a_name_the_portal_changes_is_reported(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["Фото 1.png", "plain.png"], 2: ["Фото 2.png"]})
    warnings = io.StringIO()
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        store = portal.catalog.add_image

        def transliterating(product_id: int, *, name: str, **rest: object) -> object:
            # A portal set to transliterate file names on upload.
            return store(product_id, name=name.replace("Фото ", "foto_"), **rest)  # type: ignore[arg-type]

        portal.catalog.add_image = transliterating  # type: ignore[method-assign,assignment]
        async with client_for(portal) as client:
            first = await bx.upload(client, src, warnings=warnings)
    assert first.added == 3
    text = warnings.getvalue()
    assert "1/Фото 1.png: the portal stored it as 'foto_1.png'" in text
    assert "2/Фото 2.png: the portal stored it as 'foto_2.png'" in text  # sent alone
    assert "plain.png" not in text


async def test_a_file_name_with_a_backslash_is_refused(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["x\\b.png"]})
    warnings = io.StringIO()
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src, warnings=warnings)
        assert portal.catalog.image_count() == 0
    assert (result.files, result.failed) == (0, 1)
    assert "the portal cuts names at a backslash" in warnings.getvalue()


async def test_many_halvings_under_a_small_body_limit_lose_nothing(tmp_path: Path) -> None:
    layout = {1: [f"p-{n}.png" for n in range(60)]}
    src = make_src(tmp_path, layout, size=1500)
    few = bx.RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.01)
    async with FakePortal(
        products=1, images_per_product=0, rate=None, max_request_body=7_000
    ) as portal:
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=few, rate_limit=UNLIMITED
        ) as client:
            result = await bx.upload(client, src)
        assert names_on(portal, 1) == Counter(dict.fromkeys(layout[1], 1))
        assert (result.added, result.failed) == (60, 0)
        # Halvings are not retries: more of them than the policy's attempts.
        assert portal.counters.by_status[413] > few.max_attempts


def test_the_portal_command_line_takes_a_body_limit() -> None:
    from bitrix_images.testing.__main__ import parse_args

    assert parse_args(["--max-request-body", "1048576"]).max_request_body == 1_048_576
    assert parse_args([]).max_request_body is None


async def test_on_finish_gets_the_counts_when_the_run_stops(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", {1: ["a.png", "b.png"], 2: ["c.png"]})
    finished: list[bx.UploadResult] = []
    async with FakePortal(products=2, images_per_product=1, rate=None) as portal:
        portal.inject("error", method="batch", status=401, body=INVALID_CREDENTIALS, times=2)
        async with client_for(portal) as client:
            with pytest.raises(bx.AuthError):
                await bx.upload(client, src, on_finish=finished.append)
    # Stopped by the portal at the listing: the folder was read, nothing was added.
    [result] = finished
    assert (result.products, result.files, result.added) == (2, 3, 0)


async def test_on_finish_gets_the_result_of_a_finished_run(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", {1: ["a.png"]})
    finished: list[bx.UploadResult] = []
    async with FakePortal(products=1, images_per_product=1, rate=None) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src, on_finish=finished.append)
    assert finished == [result]
    assert result.added == 1


async def test_a_folder_that_cannot_be_read_ends_no_run(tmp_path: Path) -> None:
    finished: list[bx.UploadResult] = []
    async with FakePortal(products=1, rate=None) as portal:
        async with client_for(portal) as client:
            with pytest.raises(ValueError, match="not a directory"):
                await bx.upload(client, tmp_path / "nowhere", on_finish=finished.append)
    assert finished == []


async def test_the_progress_bar_counts_products_and_adds(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", {1: ["a.png", "b.png"], 2: ["c.png"]}, size=1000)
    (src / "2" / "c.png").rename(src / "2" / "present.png")
    screen = io.StringIO()
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        portal.catalog.add_image(2, name="present.png", content=png("x"))
        async with client_for(portal) as client:
            result = await bx.upload(client, src, progress=screen, warnings=screen)
    shown = screen.getvalue()
    assert (result.added, result.present) == (2, 1)
    assert "upload: 100%" in shown
    assert "2/2 products" in shown
    assert "2 added" in shown
    assert "1 skipped" in shown


async def test_two_uploads_of_one_folder_at_once_add_each_file_once(tmp_path: Path) -> None:
    layout = {pid: [f"new-{pid}-{n}.png" for n in range(3)] for pid in (1, 2)}
    src = make_src(tmp_path / "src", layout)
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as one, client_for(portal) as two:
            first, second = await asyncio.gather(bx.upload(one, src), bx.upload(two, src))
        assert portal.counters.commands["catalog.productimage.add"] == 6
        for pid, names in layout.items():
            assert names_on(portal, pid) == Counter(names)
        assert sorted([first.added, second.added]) == [0, 6]
        assert sorted([first.present, second.present]) == [0, 6]


async def test_a_second_upload_says_who_holds_the_folder(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", {1: ["a.png"]})
    holder = FolderLock(src)
    assert holder.try_acquire()
    try:
        async with FakePortal(products=1, rate=None) as portal, client_for(portal) as client:
            with pytest.raises(LockedError, match=rf"pid {os.getpid()} on .*, since 20"):
                await bx.upload(client, src, lock_wait=0)
            assert portal.counters.requests == 0
    finally:
        holder.release()


async def test_the_journal_keeps_only_adds_not_confirmed(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", {1: ["a.png", "b.png"]})
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src)
        assert result.added == 2
        assert (src / JOURNAL_NAME).read_text() == ""
        # An add journalled by a run that died, to this portal and to another one.
        origin = str(portal.webhook_url.origin())
        lines = [
            Entry(origin, 1, "c.png", time.time() - 100).line(),
            Entry("https://other.example", 1, "c.png", time.time()).line(),
            "{cut short",
        ]
        (src / JOURNAL_NAME).write_text("".join(lines))
        warnings = io.StringIO()
        async with client_for(portal) as client:
            again = await bx.upload(client, src, warnings=warnings, settle_after=1.0)
        assert again.present == 2
        assert Journal(src).entries == [Entry.parse(lines[1])]
        assert "in flight" not in warnings.getvalue()


async def test_prune_keeps_the_image_of_every_name_in_the_folder(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=4, rate=None) as portal:
        names = [image.name or "" for image in portal.catalog.images(1)]
        src = make_src(tmp_path, {1: [names[0]]})
        (src / "1" / names[1]).write_bytes(b"")  # still being copied
        (src / "1" / names[2]).symlink_to(tmp_path / "unmounted" / "share.png")  # dangling
        (src / "1" / names[3]).write_text("not an image")
        async with client_for(portal) as client:
            result = await bx.upload(client, src, prune=True)
        assert result.removed == 0
        assert sorted(names_on(portal, 1)) == sorted(names)
        assert "catalog.productimage.delete" not in portal.counters.commands


async def test_prune_beyond_max_delete_deletes_nothing_and_says_why(tmp_path: Path) -> None:
    async with FakePortal(products=3, images_per_product=2, rate=None) as portal:
        src = make_src(tmp_path, {pid: ["new.png"] for pid in (1, 2, 3)})
        warnings = io.StringIO()
        async with client_for(portal) as client:
            held = await bx.upload(client, src, prune=True, max_delete=5, warnings=warnings)
            assert (held.added, held.removed, held.held_back) == (3, 0, 6)
            assert "prune would delete 6 images; nothing deleted: more than max_delete (5)" in (
                warnings.getvalue()
            )
            assert "6 deletes held back" in held.summary()
            assert portal.catalog.image_count() == 9
            done = await bx.upload(client, src, prune=True, max_delete=6)
        assert (done.removed, done.held_back, portal.catalog.image_count()) == (6, 0, 3)


async def test_prune_deletes_nothing_when_a_product_cannot_be_listed(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=2, rate=None) as portal:
        src = make_src(tmp_path, {1: ["new.png"], 99: ["new.png"]})  # 99 is not on the portal
        async with client_for(portal) as client:
            result = await bx.upload(client, src, prune=True)
        assert (result.unlisted, result.removed, result.held_back) == (1, 0, 2)
        assert portal.catalog.image_count() == 3


@pytest.mark.parametrize(
    ("layout", "error"),
    [
        ({"3": ["detail@a.png", "detail@b.png"]}, r"3/detail@a.png and 3/detail@b.png .*DETAIL"),
        ({"3": ["preview@a.png", "Preview@b.png"]}, r"3/Preview@b.png and 3/preview@a.png .*PREV"),
        ({"3": ["a.png"], "03": ["b.png"]}, r"folders '03' and '3' are both product 3"),
    ],
)
async def test_what_no_run_can_settle_is_an_error_before_any_request(
    tmp_path: Path, layout: dict[str, list[str]], error: str
) -> None:
    for folder, names in layout.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(png(name))
    async with FakePortal(products=3, rate=None) as portal, client_for(portal) as client:
        with pytest.raises(ValueError, match=error):
            await bx.upload(client, tmp_path)
        assert portal.counters.requests == 0


async def test_only_ascii_digit_folders_are_products(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["a.png"]})
    (src / "²").mkdir()
    (src / "2").symlink_to(src / "1")
    warnings = io.StringIO()
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src, warnings=warnings)
        assert (result.products, result.added) == (1, 1)
        assert names_on(portal, 2) == Counter()
    assert "²: not a product folder" in warnings.getvalue()
    assert "2: not a folder (a link is not followed), skipped" in warnings.getvalue()


async def test_only_regular_files_inside_src_are_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png("secret"))
    (outside / "7").mkdir()
    (outside / "7" / "linked.png").write_bytes(png("linked folder"))
    src = make_src(tmp_path / "src", {1: ["own.png"]})
    (src / "1" / "link.png").symlink_to(outside / "secret.png")
    (src / "1" / "text.bmp").write_bytes(b"BM secret: api_key=0123456789abcdef0123456789")
    os.mkfifo(src / "1" / "pipe.png")
    (src / "7").symlink_to(outside / "7")
    warnings = io.StringIO()
    async with FakePortal(products=7, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            result = await bx.upload(client, src, warnings=warnings)
        assert [image.content for image in portal.catalog.images(1)] == [png("1/own.png")]
        assert names_on(portal, 7) == Counter()
    assert (result.added, result.not_images) == (1, 1)
    text = warnings.getvalue()
    assert "1/link.png: not a regular file (a link, a FIFO, a device), skipped" in text
    assert "1/pipe.png: not a regular file" in text
    assert "1/text.bmp: not a JPEG, PNG, GIF, WEBP or BMP image, skipped" in text


async def test_a_file_over_max_file_bytes_is_never_read(tmp_path: Path) -> None:
    src = make_src(tmp_path, {1: ["small.png"]})
    big = src / "1" / "big.png"
    with big.open("wb") as out:  # sparse: 300 MiB on paper, nothing on the disk
        out.write(png("big"))
        out.truncate(300 * 2**20)
    warnings = io.StringIO()
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            tracemalloc.start()
            try:
                result = await bx.upload(client, src, warnings=warnings)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert sorted(names_on(portal, 1)) == ["small.png"]
    assert (result.added, result.failed) == (1, 1)
    assert f"1/big.png: {300 * 2**20} bytes, larger than the {100 * 2**20} allowed" in (
        warnings.getvalue()
    )
    assert peak < 4 * 2**20  # the 300 MiB were never read: a few MiB of run, not hundreds


async def test_a_file_swapped_for_a_link_after_the_scan_is_not_sent(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", {1: ["a.png"]})
    (tmp_path / "secret.png").write_bytes(png("secret"))
    file = ImageFile(1, src / "1" / "a.png", "a.png", bx.ImageType.MORE_PHOTO)
    assert read_image(file, 2**20) == png("1/a.png")
    (src / "1" / "a.png").unlink()
    (src / "1" / "a.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(ValueError, match="no longer a regular file"):
        read_image(file, 2**20)
    (src / "1" / "b.png").write_bytes(png("b", 100))
    with pytest.raises(ValueError, match="130 bytes, larger than the 10 allowed"):
        read_image(attrs.evolve(file, path=src / "1" / "b.png"), 10)


async def test_a_journal_that_is_a_link_or_unreadable_files_end_no_run_silently(
    tmp_path: Path,
) -> None:
    src = make_src(tmp_path / "src", {1: ["a.png", "locked.png"]})
    (src / "1" / "locked.png").chmod(0)
    (tmp_path / "elsewhere.jsonl").write_text("")
    (src / JOURNAL_NAME).symlink_to(tmp_path / "elsewhere.jsonl")
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        async with client_for(portal) as client:
            with pytest.raises(OSError, match="symbolic links"):  # never through a link
                await bx.upload(client, src)
            assert portal.counters.requests == 0
            (src / JOURNAL_NAME).unlink()
            os.mkfifo(src / JOURNAL_NAME)  # opened read-write: no block, then refused
            with pytest.raises(OSError, match="not a regular file"):
                await bx.upload(client, src)
            (src / JOURNAL_NAME).unlink()
            warnings = io.StringIO()
            result = await bx.upload(client, src, warnings=warnings)
    if os.geteuid() != 0:  # root reads a file of mode 000
        assert "1/locked.png: Permission denied, skipped" in warnings.getvalue()
        assert (result.added, result.failed) == (1, 1)
