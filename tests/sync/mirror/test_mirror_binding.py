"""A mirror's folder is bound to its portal (issue 21, finding 7): staging, then production,
into one DEST is refused unless rebound, and a rebind fetches every file again."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path

import pytest
from support import FAST_RETRY, UNLIMITED, ThreadPortal, oauth_client, run_cli

import bitrix_images as bx
from bitrix_images.sync.binding import Binding
from bitrix_images.sync.manifest import MANIFEST_NAME, Manifest
from bitrix_images.testing import FakePortal

IDS = [1, 2]


def files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(MANIFEST_NAME)
    }


def expected_files(portal: FakePortal) -> dict[str, bytes]:
    return {
        f"{pid}/{image.name}": image.content for pid in IDS for image in portal.catalog.images(pid)
    }


async def run(
    portal: FakePortal, dest: Path, warnings: io.StringIO | None = None, **options: object
) -> bx.MirrorResult:
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
    ) as client:
        return await bx.mirror(client, IDS, dest, warnings=warnings or io.StringIO(), **options)  # type: ignore[arg-type]


async def binding_of(dest: Path) -> Binding | None:
    manifest = await Manifest.open(dest)
    try:
        return await manifest.binding()
    finally:
        await manifest.close()


def staging_and_production() -> tuple[FakePortal, FakePortal]:
    """Two portals with the same ids and names and other bytes (of the same size), on two
    hosts."""
    staging = FakePortal(products=2, images_per_product=2, rate=None, host="127.0.0.1", seed=0)
    production = FakePortal(products=2, images_per_product=2, rate=None, host="127.0.0.2", seed=1)
    return staging, production


async def test_another_portal_is_refused_and_a_rebind_replaces_its_files(tmp_path: Path) -> None:
    staging, production = staging_and_production()
    async with staging, production:
        ours, theirs = expected_files(staging), expected_files(production)
        assert ours.keys() == theirs.keys()
        assert all(len(ours[k]) == len(theirs[k]) and ours[k] != theirs[k] for k in ours)
        await run(staging, tmp_path)
        assert files_under(tmp_path) == ours
        assert await binding_of(tmp_path) == Binding("127.0.0.1", None, 0)

        with pytest.raises(bx.PortalMismatch) as refused:
            await run(production, tmp_path)
        assert (refused.value.bound, refused.value.host) == ("127.0.0.1", "127.0.0.2")
        assert "mirrors 127.0.0.1, not 127.0.0.2" in str(refused.value)
        assert "--rebind" in str(refused.value)
        assert production.counters.requests == 0  # refused before any request
        assert files_under(tmp_path) == ours
        for verify in (False, True):  # --verify is refused alike: it trusts ids too
            with pytest.raises(bx.PortalMismatch):
                await run(production, tmp_path, verify=verify)
        with pytest.raises(bx.PortalMismatch):  # a dry run checks as a real run does
            await run(production, tmp_path, dry_run=True)

        warnings = io.StringIO()
        rebound = await run(production, tmp_path, warnings, rebind=True)
        assert (rebound.downloaded, rebound.skipped, rebound.failed) == (4, 0, 0)
        assert files_under(tmp_path) == theirs
        assert "bound now to 127.0.0.2" in warnings.getvalue()
        assert await binding_of(tmp_path) == Binding("127.0.0.2", None, 1)
        assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]

        again = await run(production, tmp_path)
        assert (again.downloaded, again.skipped) == (0, 4)
        with pytest.raises(bx.PortalMismatch, match=r"mirrors 127\.0\.0\.2, not 127\.0\.0\.1"):
            await run(staging, tmp_path)


async def test_a_rebind_keeps_the_files_whose_bytes_are_the_same(tmp_path: Path) -> None:
    old = FakePortal(products=2, images_per_product=2, rate=None, host="127.0.0.1")
    new = FakePortal(products=2, images_per_product=2, rate=None, host="127.0.0.2")
    async with old, new:
        new.catalog.add_image(2, name="only-here.png", content=b"\x89PNG\r\n\x1a\nnew")
        await run(old, tmp_path)
        before = {p: p.stat().st_ino for p in tmp_path.rglob("*.png")}
        rebound = await run(new, tmp_path, rebind=True)
        # Each file fetched again and compared: the same bytes stay where they were.
        assert (rebound.downloaded, rebound.skipped) == (1, 4)
        assert files_under(tmp_path) == expected_files(new)
        assert {p: p.stat().st_ino for p in before} == before


async def test_a_rebind_stopped_half_way_is_finished_by_the_next_run(tmp_path: Path) -> None:
    staging, production = staging_and_production()
    async with staging, production:
        await run(staging, tmp_path)
        production.catalog.deny_read(2)
        half = await run(production, tmp_path, rebind=True)
        assert (half.downloaded, half.unlisted) == (2, 1)
        production.catalog._deny_read.discard(2)
        # Product 2's files were written for the other portal: not trusted by id now either.
        rest = await run(production, tmp_path)
        assert (rest.downloaded, rest.skipped) == (2, 2)
        assert files_under(tmp_path) == expected_files(production)


async def test_a_manifest_of_an_earlier_version_is_bound_on_its_first_run(tmp_path: Path) -> None:
    staging, production = staging_and_production()
    async with staging, production:
        await run(staging, tmp_path)
        with contextlib.closing(sqlite3.connect(tmp_path / MANIFEST_NAME)) as db, db:
            # What version 1 wrote: no binding, no generation (built anew rather than with
            # DROP COLUMN, which SQLite has only since 3.35).
            db.execute("DROP TABLE portal")
            db.execute("ALTER TABLE files RENAME TO v2")
            db.execute(
                "CREATE TABLE files (image_id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL, "
                "path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, sha256 TEXT NOT NULL, "
                "recorded REAL NOT NULL, via TEXT)"
            )
            db.execute(
                "INSERT INTO files SELECT image_id, product_id, path, size, sha256, recorded, via "
                "FROM v2"
            )
            db.execute("DROP TABLE v2")
            db.execute("PRAGMA user_version = 1")
        assert await binding_of(tmp_path) is None
        again = await run(staging, tmp_path)
        assert (again.downloaded, again.skipped) == (0, 4)
        assert await binding_of(tmp_path) == Binding("127.0.0.1", None, 0)
        with pytest.raises(bx.PortalMismatch):
            await run(production, tmp_path)


async def test_a_renamed_portal_rebinds_itself_by_its_member_id(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        async with oauth_client(portal) as client:
            portal.expire_access_token()  # the run refreshes, and learns the member_id
            await bx.mirror(client, IDS, tmp_path, warnings=io.StringIO())
        assert await binding_of(tmp_path) == Binding("127.0.0.1", portal.member_id, 0)

        # The portal had another name when DEST was mirrored.
        manifest = await Manifest.open(tmp_path)
        try:
            await manifest.bind(Binding("old-name.example", portal.member_id, 0))
        finally:
            await manifest.close()
        warnings = io.StringIO()
        async with oauth_client(portal) as client:
            portal.expire_access_token()
            await client.images.fields()  # a refresh: the client knows the member_id now
            moved = await bx.mirror(client, IDS, tmp_path, warnings=warnings)
        assert (moved.downloaded, moved.skipped) == (0, 4)
        assert "moved from old-name.example to 127.0.0.1 (same member_id)" in warnings.getvalue()
        assert await binding_of(tmp_path) == Binding("127.0.0.1", portal.member_id, 0)

        # The same host with another member_id is another portal (one set up anew).
        manifest = await Manifest.open(tmp_path)
        try:
            await manifest.bind(Binding("127.0.0.1", "another-member", 0))
        finally:
            await manifest.close()
        async with oauth_client(portal) as client:
            portal.expire_access_token()
            await client.images.fields()
            with pytest.raises(bx.PortalMismatch, match="another portal's member_id"):
                await bx.mirror(client, IDS, tmp_path, warnings=io.StringIO())
        # A webhook client, which never knows the member_id, is judged by the host.
        plain = await run(portal, tmp_path)
        assert plain.skipped == 4


@pytest.mark.usefixtures("cli_env")
def test_the_command_line_refuses_another_portal_until_rebind(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    staging = ThreadPortal(products=2, images_per_product=2, host="127.0.0.1", seed=0)
    production = ThreadPortal(products=2, images_per_product=2, host="127.0.0.2", seed=1)
    try:
        products = ("--product", "1", "--product", "2")
        code, _, _ = run_cli(capsys, "mirror", "dest", *products, "--webhook", staging.url)
        assert code == 0
        code, out, err = run_cli(capsys, "mirror", "dest", *products, "--webhook", production.url)
        assert code == 1
        assert out == ""  # the run never started: no summary
        assert err.startswith("bitrix-images: error: dest mirrors 127.0.0.1, not 127.0.0.2")
        argv = ("mirror", "dest", *products, "--rebind", "--webhook", production.url)
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, err
        assert "(4 downloaded, 0 skipped)" in out
        assert files_under(tmp_path / "dest") == expected_files(production.portal)
    finally:
        staging.close()
        production.close()
