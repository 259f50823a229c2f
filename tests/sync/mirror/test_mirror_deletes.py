"""mirror --prune decides its removals after every listing and makes at most --max-delete of
them (issue 21, finding 8): beyond the bound nothing is removed, the run says why, exits 1."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path

import pytest
from support import FAST_RETRY, UNLIMITED, ThreadPortal, run_cli

import bitrix_images as bx
from bitrix_images.sync.manifest import MANIFEST_NAME
from bitrix_images.testing import FakePortal


async def run(portal: FakePortal, dest: Path, ids: list[int], **options: object) -> bx.MirrorResult:
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
    ) as client:
        return await bx.mirror(client, ids, dest, **options)  # type: ignore[arg-type]


def rows(dest: Path) -> int:
    with contextlib.closing(sqlite3.connect(dest / MANIFEST_NAME)) as db:
        (count,) = db.execute("SELECT count(*) FROM files").fetchone()
    return int(count)


def pngs(dest: Path) -> int:
    return len(list(dest.rglob("*.png")))


async def test_removals_beyond_max_delete_over_the_whole_run_are_held_back(
    tmp_path: Path,
) -> None:
    async with FakePortal(products=3, images_per_product=4, rate=None) as portal:
        await run(portal, tmp_path, [1, 2, 3], warnings=io.StringIO())
        for product_id in (1, 2):  # three gone in each: six in the run, five allowed
            for image in portal.catalog.images(product_id)[:3]:
                portal.catalog.delete_image(product_id, image.id)

        warnings = io.StringIO()
        plan = await run(
            portal, tmp_path, [1, 2, 3], prune=True, dry_run=True, max_delete=5, warnings=warnings
        )
        assert (plan.removed, plan.held_back) == (0, 6)
        assert not [line for line in plan.planned if line.startswith("-")]
        held = await run(portal, tmp_path, [1, 2, 3], prune=True, max_delete=5, warnings=warnings)
        assert (held.removed, held.held_back) == (0, 6)
        assert "0 removed, 6 removals held back" in held.summary()
        text = warnings.getvalue()
        assert text.count("prune would remove 6 files; nothing removed: more than max_delete") == 2
        assert "--max-delete" in text
        assert (pngs(tmp_path), rows(tmp_path)) == (12, 12)  # files and their rows kept

        done = await run(portal, tmp_path, [1, 2, 3], prune=True, max_delete=6, warnings=warnings)
        assert (done.removed, done.held_back) == (6, 0)
        assert (pngs(tmp_path), rows(tmp_path)) == (6, 6)


async def test_a_product_listed_after_a_failure_removes_nothing(tmp_path: Path) -> None:
    async with FakePortal(products=3, images_per_product=2, rate=None) as portal:
        await run(portal, tmp_path, [1, 2, 3], warnings=io.StringIO())
        gone = portal.catalog.images(3)[0]
        portal.catalog.delete_image(3, gone.id)
        portal.catalog.deny_read(1)  # listed first, and failing
        warnings = io.StringIO()
        result = await run(portal, tmp_path, [1, 2, 3], prune=True, warnings=warnings)
        assert (result.removed, result.held_back, result.unlisted) == (0, 1, 1)
        assert "nothing removed: 1 product could not be listed" in warnings.getvalue()
        assert (tmp_path / "3" / gone.name).read_bytes() == gone.content


async def test_max_delete_is_checked_before_any_request(tmp_path: Path) -> None:
    async with FakePortal(products=1, rate=None) as portal:
        for wrong, kind in ((-1, ValueError), (True, ValueError), ("5", ValueError)):
            with pytest.raises(kind, match="max_delete must be an int >= 0"):
                await run(portal, tmp_path, [1], max_delete=wrong)
        with pytest.raises(TypeError, match="rebind must be a bool"):
            await run(portal, tmp_path, [1], rebind="yes")
        assert portal.counters.requests == 0


@pytest.mark.usefixtures("cli_env")
def test_the_command_line_exits_1_when_removals_are_held_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    served = ThreadPortal(products=1, images_per_product=3)
    try:
        base = ("mirror", "dest", "--product", "1", "--webhook", served.url)
        assert run_cli(capsys, *base)[0] == 0

        def forget_all() -> None:
            for image in served.portal.catalog.images(1):
                served.portal.catalog.delete_image(1, image.id)

        served.call(forget_all)
        code, out, err = run_cli(capsys, *base, "--prune", "--max-delete", "2")
        assert code == 1
        assert "0 removed, 3 removals held back" in out
        assert "prune would remove 3 files; nothing removed: more than max_delete (2)" in err
        assert err.strip().endswith("error: 3 removals held back (see the warnings)")
        assert pngs(tmp_path / "dest") == 3
        code, out, _ = run_cli(capsys, *base, "--prune", "--max-delete", "3")
        assert code == 0
        assert "3 removed" in out
        assert pngs(tmp_path / "dest") == 0
    finally:
        served.close()
