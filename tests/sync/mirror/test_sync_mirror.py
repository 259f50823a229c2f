"""``bitrix_images.mirror`` with its manifest: prune, verify, adopt, and "already here" by id."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support import FAST_RETRY, UNLIMITED

import bitrix_images as bx
from bitrix_images.sync.manifest import MANIFEST_NAME, Entry, Manifest
from bitrix_images.testing import FakePortal


def files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(MANIFEST_NAME)
    }


def expected_files(portal: FakePortal, product_ids: list[int]) -> dict[str, bytes]:
    return {
        f"{pid}/{image.name}": image.content
        for pid in product_ids
        for image in portal.catalog.images(pid)
    }


def manifest_rows(dest: Path) -> dict[int, str]:
    with contextlib.closing(sqlite3.connect(dest / MANIFEST_NAME)) as db:
        return dict(db.execute("SELECT image_id, path FROM files"))


def client_for(portal: FakePortal) -> bx.BitrixClient:
    return bx.BitrixClient.from_webhook(portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED)


async def run(portal: FakePortal, dest: Path, ids: list[int], **options: object) -> bx.MirrorResult:
    async with client_for(portal) as client:
        return await bx.mirror(client, ids, dest, warnings=io.StringIO(), **options)  # type: ignore[arg-type]


async def test_the_manifest_records_every_file(tmp_path: Path) -> None:
    async with FakePortal(products=3, images_per_product=3, rate=None) as portal:
        result = await run(portal, tmp_path, [1, 2, 3])
        assert (result.downloaded, result.skipped) == (9, 0)
        rows = manifest_rows(tmp_path)
        assert rows == {
            image.id: f"{pid}/{image.name}"
            for pid in (1, 2, 3)
            for image in portal.catalog.images(pid)
        }
        again = await run(portal, tmp_path, [1, 2, 3])
        assert (again.downloaded, again.skipped) == (0, 9)


async def test_prune_removes_only_what_the_manifest_lists(tmp_path: Path) -> None:
    async with FakePortal(products=4, images_per_product=3, rate=None) as portal:
        await run(portal, tmp_path, [1, 2, 3, 4])
        catalog = portal.catalog
        gone_1 = catalog.images(1)[1]
        gone_3 = catalog.images(3)[0]
        catalog.delete_image(1, gone_1.id)
        for image in catalog.images(2):
            catalog.delete_image(2, image.id)  # product 2 has no images left
        catalog.delete_image(3, gone_3.id)
        catalog.deny_read(3)  # its listing fails: nothing of it may be pruned
        (tmp_path / "1" / "notes.txt").write_text("the user's own file")
        (tmp_path / "2" / "mine.png").write_bytes(b"\x89PNG\r\n\x1a\nmine")
        warnings = io.StringIO()
        async with client_for(portal) as client:
            plan = await bx.mirror(
                client, [1, 2, 3, 4], tmp_path, prune=True, dry_run=True, warnings=warnings
            )
        # Product 3 could not be listed: every removal waits for a run that lists them all.
        assert (plan.removed, plan.held_back) == (0, 4)
        assert not [line for line in plan.planned if line.startswith("-")]
        assert "prune would remove 4 files; nothing removed: 1 product could not be listed" in (
            warnings.getvalue()
        )
        held = await run(portal, tmp_path, [1, 2, 3, 4], prune=True)
        assert (held.removed, held.held_back, held.unlisted) == (0, 4, 1)
        assert "4 removals held back" in held.summary()
        assert (tmp_path / "1" / gone_1.name).exists()

        async with client_for(portal) as client:
            plan = await bx.mirror(
                client, [1, 2, 4], tmp_path, prune=True, dry_run=True, warnings=warnings
            )
        assert plan.removed == 4
        assert f"- 1/{gone_1.name} (id {gone_1.id})" in plan.planned
        assert sum(line.startswith("- 2/") for line in plan.planned) == 3
        assert sum(line.startswith("= 4/") for line in plan.planned) == 3
        assert "4 to remove" in plan.summary()
        assert (tmp_path / "1" / gone_1.name).exists()  # a dry run removes nothing

        async with client_for(portal) as client:
            result = await bx.mirror(client, [1, 2, 4], tmp_path, prune=True, warnings=warnings)
        assert (result.removed, result.unlisted, result.held_back) == (4, 0, 0)
        assert "4 removed" in result.summary()
        assert "product 3 skipped" in warnings.getvalue()
        files = files_under(tmp_path)
        assert f"1/{gone_1.name}" not in files
        assert files["1/notes.txt"] == b"the user's own file"
        assert set(files) & {f"2/{name}" for name in ("photo-4.png", "photo-5.png")} == set()
        assert files["2/mine.png"] == b"\x89PNG\r\n\x1a\nmine"
        assert f"3/{gone_3.name}" in files  # a failed listing is not an empty product
        assert {path for path in files if path.startswith("2/")} == {"2/mine.png"}
        assert gone_1.id not in manifest_rows(tmp_path)
        assert gone_3.id in manifest_rows(tmp_path)


async def test_prune_keeps_a_listed_file_the_user_changed(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=2, rate=None) as portal:
        await run(portal, tmp_path, [1])
        image = portal.catalog.images(1)[0]
        (tmp_path / "1" / image.name).write_bytes(b"edited by hand")
        portal.catalog.delete_image(1, image.id)
        warnings = io.StringIO()
        async with client_for(portal) as client:
            result = await bx.mirror(client, [1], tmp_path, prune=True, warnings=warnings)
        assert result.removed == 0
        assert (tmp_path / "1" / image.name).read_bytes() == b"edited by hand"
        assert "changed since it was written; kept, not pruned" in warnings.getvalue()
        assert image.id not in manifest_rows(tmp_path)


async def test_a_new_image_with_an_old_name_is_not_skipped(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=2, rate=None) as portal:
        await run(portal, tmp_path, [1])
        old = portal.catalog.images(1)[0]
        portal.catalog.delete_image(1, old.id)
        new = portal.catalog.add_image(1, name=old.name, content=b"\x89PNG\r\n\x1a\nnew")

        kept = await run(portal, tmp_path, [1])
        assert (kept.downloaded, kept.skipped) == (1, 1)
        # Without prune the old file stays; the new image goes beside it, by its id.
        assert (tmp_path / "1" / old.name).read_bytes() == old.content
        assert (tmp_path / "1" / f"{new.id}-{old.name}").read_bytes() == new.content

        pruned = await run(portal, tmp_path, [1], prune=True)
        assert (pruned.removed, pruned.skipped) == (1, 2)
        assert not (tmp_path / "1" / old.name).exists()


async def test_verify_fetches_a_changed_file_again(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=3, rate=None) as portal:
        await run(portal, tmp_path, [1])
        image = portal.catalog.images(1)[2]
        target = tmp_path / "1" / image.name
        target.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * (len(image.content) - 8))  # same size
        plain = await run(portal, tmp_path, [1])
        assert plain.skipped == 3  # without --verify only the size is compared
        verified = await run(portal, tmp_path, [1], verify=True)
        assert (verified.downloaded, verified.skipped) == (1, 2)
        assert target.read_bytes() == image.content
        (tmp_path / "1" / portal.catalog.images(1)[0].name).unlink()  # a listed file gone
        healed = await run(portal, tmp_path, [1])
        assert (healed.downloaded, healed.skipped) == (1, 2)
        assert files_under(tmp_path) == expected_files(portal, [1])


async def test_a_file_written_but_not_recorded_is_adopted(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=3, rate=None) as portal:
        await run(portal, tmp_path, [1, 2])
        before = files_under(tmp_path)
        # A crash between the rename and the record: the files are there, the rows are not.
        with contextlib.closing(sqlite3.connect(tmp_path / MANIFEST_NAME)) as db, db:
            db.execute("DELETE FROM files")
        mine = tmp_path / "2" / portal.catalog.images(2)[0].name
        mine.write_bytes(b"\x89PNG\r\n\x1a\na file of the user's, by chance of that name")
        result = await run(portal, tmp_path, [1, 2])
        assert (result.adopted, result.downloaded, result.skipped) == (5, 1, 0)
        assert "5 adopted" in result.summary()
        files = files_under(tmp_path)
        image = portal.catalog.images(2)[0]
        assert files[f"2/{image.id}-{image.name}"] == image.content  # beside the user's file
        assert mine.read_bytes().startswith(b"\x89PNG\r\n\x1a\na file of the user's")
        assert {k: v for k, v in files.items() if k != f"2/{image.id}-{image.name}"} == {
            **before,
            f"2/{image.name}": mine.read_bytes(),
        }
        assert len(manifest_rows(tmp_path)) == 6
        again = await run(portal, tmp_path, [1, 2])
        assert (again.skipped, again.downloaded, again.adopted) == (6, 0, 0)


async def test_a_dry_run_creates_nothing(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        result = await run(portal, tmp_path / "new", [1, 2], dry_run=True)
        assert result.downloaded == 4
        assert result.planned[0].startswith("+ 1/")
        assert "4 to download" in result.summary()
        assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("7/a.png", True),
        ("8/a.png", False),
        ("7/../a.png", False),
        ("a.png", False),
        ("7/x/a", False),
    ],
)
def test_a_manifest_row_never_names_a_path_outside_its_folder(
    tmp_path: Path, path: str, safe: bool
) -> None:
    entry = Entry(7, 1, path, 1, "0" * 64)
    assert (entry.under(tmp_path) == tmp_path / "7" / "a.png") is safe


async def test_the_manifest_replaces_a_row_for_a_reused_path(tmp_path: Path) -> None:
    manifest = await Manifest.open(tmp_path)
    try:
        await manifest.record([Entry(1, 10, "1/a.png", 3, "a" * 64)])
        await manifest.record([Entry(1, 11, "1/a.png", 4, "b" * 64)])
        await manifest.record([])
        await manifest.forget([])
        assert list(await manifest.product(1)) == [11]
        assert [entry.image_id for entry in await manifest.entries()] == [11]
        await manifest.forget([11])
        assert await manifest.entries() == []
    finally:
        await manifest.close()
    await manifest.close()  # harmless twice
    with pytest.raises(RuntimeError, match="closed"):
        manifest._conn()


async def test_a_cancelled_mirror_records_what_it_wrote(tmp_path: Path) -> None:
    async with FakePortal(products=20, images_per_product=5, rate=None) as portal:
        started = asyncio.Event()
        async with client_for(portal) as client:
            original = client.images.fetch_file

            async def fetch_file(image: bx.ProductImage, dest: object, **options: Any) -> Any:
                fetched = await original(image, dest, **options)  # type: ignore[arg-type]
                started.set()
                await asyncio.Event().wait()  # hold here until cancelled
                return fetched

            client.images.fetch_file = fetch_file  # type: ignore[method-assign]
            task = asyncio.ensure_future(
                bx.mirror(client, list(range(1, 21)), tmp_path, warnings=io.StringIO())
            )
            await asyncio.wait_for(started.wait(), timeout=60)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # The files written before the cancel are adopted, not fetched again, next time.
        written = files_under(tmp_path)
        assert written
        result = await run(portal, tmp_path, list(range(1, 21)))
        assert result.adopted == len(written)
        assert files_under(tmp_path) == expected_files(portal, list(range(1, 21)))


async def test_a_manifest_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_bytes(b"this is not a database" * 100)
    async with FakePortal(products=1, images_per_product=1, rate=None) as portal:
        with pytest.raises(OSError, match=r"the manifest .* cannot be used"):
            await run(portal, tmp_path, [1])
