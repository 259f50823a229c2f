"""The jobs' per-file events (``on_event``) and their one line format, against the portal."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import FAST_RETRY, PNG_HEAD, UNLIMITED

import bitrix_images as bx
from bitrix_images.sync import progress
from bitrix_images.sync.events import FileEvent
from bitrix_images.testing import FakePortal

ACCESS_DENIED = {"error": "ACCESS_DENIED", "error_description": "Access denied."}


def client_for(portal: FakePortal) -> bx.BitrixClient:
    return bx.BitrixClient.from_webhook(portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED)


def test_the_line_of_each_kind() -> None:
    assert FileEvent("add", 3, "front.png").line == "+ 3/front.png"
    replace = FileEvent("replace", 3, "detail@front.png", replaces="photo-1.png", replaces_id=31)
    assert replace.line == "~ 3/detail@front.png replaces 'photo-1.png' (id 31)"
    assert FileEvent("replace", 3, "x.png", 7).line == "~ 3/x.png"  # a mirror's file fetched again
    assert FileEvent("replace", 3, "f.png", replaces_id=9).line == (
        "~ 3/f.png replaces a nameless image (id 9)"
    )
    assert FileEvent("remove", 3, "old.png", 40).line == "- 3/old.png (id 40)"
    assert FileEvent("keep", 3, "kept.png", 41).line == "= 3/kept.png"
    assert FileEvent("fail", 3, "x.png", 42, reason="refused").line == "! 3/x.png (id 42): refused"
    assert FileEvent("unlisted", 9, reason="not found").line == "! 9: not found"
    # Names and reasons come from the portal: shown, never run by the terminal.
    assert FileEvent("add", 3, "a\x1b]0;pwned\x07.png").line == "+ 3/a\\x1b]0;pwned\\x07.png"
    assert FileEvent("fail", 3, "b.png", reason="x\ny").line == "! 3/b.png: x\\x0ay"
    with pytest.raises(ValueError, match="kind"):
        FileEvent("moved", 3, "a.png")


def test_an_event_as_json_has_every_field() -> None:
    event = FileEvent("fail", 3, "x.png", 42, reason="refused")
    assert event.as_json() == {
        "event": "fail",
        "product": 3,
        "name": "x.png",
        "image_id": 42,
        "bytes": 0,
        "replaces": None,
        "replaces_id": None,
        "reason": "refused",
    }


async def test_mirror_tells_each_file(tmp_path: Path) -> None:
    async with FakePortal(products=3, images_per_product=2, rate=None) as portal:
        catalog = portal.catalog
        events: list[FileEvent] = []
        async with client_for(portal) as client:
            first = await bx.mirror(client, [1, 2], tmp_path, on_event=events.append)
        assert [event.kind for event in events] == ["add"] * 4
        assert sum(event.size for event in events) == first.bytes > 0
        assert {(e.product_id, e.name, e.image_id) for e in events} == {
            (pid, image.name, image.id) for pid in (1, 2) for image in catalog.images(pid)
        }

        gone = catalog.images(1)[0]
        catalog.delete_image(1, gone.id)
        changed = catalog.images(2)[0]
        (tmp_path / "2" / changed.name).write_bytes(b"edited by hand")
        catalog.deny_read(3)
        events.clear()
        async with client_for(portal) as client:
            await bx.mirror(client, [1, 2, 3], tmp_path, prune=True, on_event=events.append)
        lines = sorted(event.line for event in events)
        kept = catalog.images(1)[0]
        other = catalog.images(2)[1]
        # Product 3 could not be listed: prune holds every removal back.
        assert lines == sorted(
            [f"= 1/{kept.name}", f"~ 2/{changed.name}", f"= 2/{other.name}", "! 3: Access Denied"]
        ), lines
        events.clear()
        async with client_for(portal) as client:
            await bx.mirror(client, [1, 2], tmp_path, prune=True, on_event=events.append)
        assert f"- 1/{gone.name} (id {gone.id})" in [event.line for event in events]


async def test_a_mirror_dry_run_plans_in_the_same_lines(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        async with client_for(portal) as client:
            await bx.mirror(client, [1], tmp_path)
        events: list[FileEvent] = []
        async with client_for(portal) as client:
            plan = await bx.mirror(client, [1, 2], tmp_path, dry_run=True, on_event=events.append)
        assert plan.planned == tuple(event.line for event in events)
        assert [line[0] for line in plan.planned] == ["=", "=", "+", "+"]


async def test_a_failed_download_is_a_fail_event(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=2, rate=None) as portal:
        portal.inject("error", method="download", status=403, body=ACCESS_DENIED)
        events: list[FileEvent] = []
        async with client_for(portal) as client:
            result = await bx.mirror(
                client, [1], tmp_path, via="rest", concurrency=1, on_event=events.append
            )
        failed = [event for event in events if event.kind == "fail"]
        assert result.failed == len(failed) == 1
        assert failed[0].image_id in {image.id for image in portal.catalog.images(1)}
        assert "ACCESS_DENIED" in (failed[0].reason or "")


async def test_no_event_is_made_when_nobody_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakePortal(products=2, images_per_product=3, rate=None) as portal:

        def no_event(*args: object, **kwargs: object) -> FileEvent:
            raise AssertionError("an event was made for nobody")

        async with client_for(portal) as client:
            await bx.mirror(client, [1, 2], tmp_path)
            monkeypatch.setattr(progress, "FileEvent", no_event)
            again = await bx.mirror(client, [1, 2], tmp_path)
        assert again.skipped == 6


async def test_upload_tells_each_file(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        catalog = portal.catalog
        folder = tmp_path / "1"
        folder.mkdir()
        kept = catalog.images(1)[1]
        detail = next(i for i in catalog.images(1) if i.type == "DETAIL_PICTURE")
        (folder / kept.name).write_bytes(PNG_HEAD + b"kept")
        (folder / "detail@front.png").write_bytes(PNG_HEAD + b"front")
        (folder / "side.png").write_bytes(PNG_HEAD + b"side")
        events: list[FileEvent] = []
        async with client_for(portal) as client:
            plan = await bx.upload(client, tmp_path, dry_run=True, on_event=events.append)
            assert plan.planned == tuple(event.line for event in events)
            events.clear()
            result = await bx.upload(client, tmp_path, on_event=events.append)
        lines = sorted(event.line for event in events)
        assert lines == sorted(
            [
                f"= 1/{kept.name}",
                f"~ 1/detail@front.png replaces {detail.name!r} (id {detail.id})",
                "+ 1/side.png",
            ]
        ), lines
        assert sorted(plan.planned) == lines
        assert result.added == 2
        added = {event.name: event.size for event in events if event.kind != "keep"}
        assert added == {"detail@front.png": len(PNG_HEAD) + 5, "side.png": len(PNG_HEAD) + 4}


async def test_upload_tells_deletes_and_failures(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        catalog = portal.catalog
        for pid in (1, 2):
            (tmp_path / str(pid)).mkdir()
        keep = catalog.images(1)[1]
        gone = catalog.images(1)[0]
        (tmp_path / "1" / keep.name).write_bytes(PNG_HEAD + b"keep")
        (tmp_path / "2" / "new.png").write_bytes(PNG_HEAD + b"new")
        catalog.deny_write(2)  # its add and its two deletes fail
        events: list[FileEvent] = []
        async with client_for(portal) as client:
            result = await bx.upload(client, tmp_path, prune=True, on_event=events.append)
        lines = sorted(event.line for event in events)
        assert f"- 1/{gone.name} (id {gone.id})" in lines
        failures = [event for event in events if event.kind == "fail"]
        assert result.failed == len(failures) == 3
        lines = sorted(event.line for event in failures)
        assert lines == sorted(
            [
                *(f"! 2/{i.name} (id {i.id}): Access Denied" for i in catalog.images(2)),
                "! 2/new.png: Access Denied",
            ]
        )
