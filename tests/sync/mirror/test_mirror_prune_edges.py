"""Prune's look at a recorded file, and the run that stops before every product was listed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
from pathlib import Path

import pytest
from support import FAST_RETRY, UNLIMITED

import bitrix_images as bx
from bitrix_images.sync.dest import remove_ours
from bitrix_images.sync.manifest import MANIFEST_NAME, digest
from bitrix_images.testing import INTERNAL_SERVER_ERROR, FakePortal

DATA = b"the bytes this tool wrote"
SHA = hashlib.sha256(DATA).hexdigest()


def test_remove_ours_says_why_a_file_is_not_removed(tmp_path: Path) -> None:
    folder = tmp_path / "7"
    assert remove_ours(folder, "a.png", len(DATA), SHA, dry_run=False) == "gone"
    folder.write_text("a file where the folder was")
    why = remove_ours(folder, "a.png", len(DATA), SHA, dry_run=False)
    assert why == "is in a folder that is a link or not a folder (not entered)"
    folder.unlink()
    folder.mkdir()
    assert remove_ours(folder, "a.png", len(DATA), SHA, dry_run=False) == "gone"
    os.mkfifo(folder / "a.png")
    assert remove_ours(folder, "a.png", len(DATA), SHA, dry_run=False) == "is a FIFO"
    (folder / "a.png").unlink()
    (folder / "a.png").symlink_to(tmp_path / "elsewhere")
    assert remove_ours(folder, "a.png", len(DATA), SHA, dry_run=False) == "is a symbolic link"
    (folder / "a.png").unlink()
    (folder / "a.png").write_bytes(b"edited")
    why = remove_ours(folder, "a.png", len(DATA), SHA, dry_run=False)
    assert why == "changed since it was written"
    (folder / "a.png").write_bytes(DATA)
    assert remove_ours(folder, "a.png", len(DATA), SHA, dry_run=True) is None
    assert (folder / "a.png").exists()  # a dry run only looks
    assert remove_ours(folder, "a.png", len(DATA), SHA, dry_run=False) is None
    assert not (folder / "a.png").exists()


def test_digest_opens_only_regular_files(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(DATA)
    assert digest(tmp_path / "file") == (len(DATA), SHA)
    (tmp_path / "link").symlink_to(tmp_path / "file")
    with pytest.raises(OSError, match="a symbolic link, not followed"):
        digest(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="a FIFO, not a regular file"):
        digest(tmp_path / "fifo")  # returns at once: opened without blocking, then refused
    with pytest.raises(FileNotFoundError):
        digest(tmp_path / "none")


def client_for(portal: FakePortal) -> bx.BitrixClient:
    return bx.BitrixClient.from_webhook(portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED)


async def test_a_listing_that_stops_removes_nothing(tmp_path: Path) -> None:
    async with FakePortal(products=60, images_per_product=1, rate=None) as portal:
        async with client_for(portal) as client:
            await bx.mirror(client, range(1, 61), tmp_path, warnings=io.StringIO())
        gone = portal.catalog.images(1)[0]
        portal.catalog.delete_image(1, gone.id)
        # The first listing request (products 1-50) passes; the next one fails for good.
        portal.inject("delay", method="batch", delay=0.0)
        portal.inject("error", method="batch", status=500, body=INTERNAL_SERVER_ERROR, times=99)

        finished: list[bx.MirrorResult] = []
        warnings = io.StringIO()
        async with client_for(portal) as client:
            with pytest.raises(bx.ServerError):
                await bx.mirror(
                    client,
                    range(1, 61),
                    tmp_path,
                    prune=True,
                    warnings=warnings,
                    on_finish=finished.append,
                )
        assert (tmp_path / "1" / gone.name).read_bytes() == gone.content
        (result,) = finished
        assert (result.removed, result.held_back) == (0, 1)
        assert "nothing removed: the listing did not finish" in warnings.getvalue()


async def test_a_row_that_names_no_file_of_its_folder_is_forgotten(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=1, rate=None) as portal:
        async with client_for(portal) as client:
            await bx.mirror(client, [1], tmp_path, warnings=io.StringIO())
            (tmp_path / "outside.png").write_bytes(DATA)
            with contextlib.closing(sqlite3.connect(tmp_path / MANIFEST_NAME)) as db, db:
                # A row edited by hand, for an image the portal does not have.
                db.execute(
                    "INSERT INTO files (image_id, product_id, path, size, sha256, recorded) "
                    "VALUES (999, 1, '../outside.png', ?, ?, 0)",
                    (len(DATA), SHA),
                )
            result = await bx.mirror(client, [1], tmp_path, prune=True, warnings=io.StringIO())
        assert (result.removed, result.held_back) == (0, 0)
        assert (tmp_path / "outside.png").read_bytes() == DATA
        with contextlib.closing(sqlite3.connect(tmp_path / MANIFEST_NAME)) as db:
            assert db.execute("SELECT count(*) FROM files WHERE image_id = 999").fetchone() == (0,)


async def test_a_failed_download_during_a_rebind_leaves_no_temporary_file(tmp_path: Path) -> None:
    old = FakePortal(products=1, images_per_product=2, rate=None, host="127.0.0.1")
    new = FakePortal(products=1, images_per_product=2, rate=None, host="127.0.0.2", seed=1)
    async with old, new:
        async with client_for(old) as client:
            await bx.mirror(client, [1], tmp_path, warnings=io.StringIO())
        kept = {path.name: path.read_bytes() for path in (tmp_path / "1").iterdir()}
        new.inject("error", method="download", status=403, body={"error": "ACCESS_DENIED"}, times=9)
        async with client_for(new) as client:
            result = await bx.mirror(
                client, [1], tmp_path, rebind=True, via="rest", warnings=io.StringIO()
            )
        assert (result.failed, result.downloaded) == (2, 0)
        # The files stay as they were, and nothing else is left beside them.
        assert {path.name: path.read_bytes() for path in (tmp_path / "1").iterdir()} == kept
