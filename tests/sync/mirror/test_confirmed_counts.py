"""With tiny timeouts, a job counts only what the portal confirmed (issue 21, finding 9):
mirror counts a file downloaded only when it is on disk, and upload counts an add whose answer
timed out only once a listing shows it, never sending it again before its send time plus
settle_after (the add may still be running on the portal)."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from collections import Counter
from pathlib import Path

from support import FAST_RETRY, PNG, UNLIMITED, settle

import bitrix_images as bx
from bitrix_images.sync.manifest import MANIFEST_NAME
from bitrix_images.sync.upload.journal import JOURNAL_NAME
from bitrix_images.testing import FakePortal

TINY = 0.2  # seconds: the client's timeout, far below the portal's delay
LATE = 0.5  # seconds the portal takes before it processes a delayed request
# What the run waits before it lists an add whose answer was lost: the portal's delayed add
# has long been made by then (the default is the cloud portals' 60 s).
SETTLE = 5.0


async def test_an_add_whose_answer_timed_out_is_neither_counted_nor_sent_twice(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    (src / "1").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (src / "1" / name).write_bytes(PNG + name.encode())
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        # The first add is processed after the client gave up on its answer.
        portal.inject("delay", method="catalog.productImage.add", delay=LATE)
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED, timeout=TINY
        ) as client:
            result = await bx.upload(
                client, src, pack=False, settle_after=SETTLE, warnings=io.StringIO()
            )
        await settle(portal, timeout=30)
        names = Counter(image.name for image in portal.catalog.images(1))
        assert names == Counter({"a.png": 1, "b.png": 1})  # no duplicate, ever
        assert portal.counters.by_method["catalog.productimage.add"] == 2  # nothing resent
        # Counted once the listing showed it: what the portal confirmed.
        assert (result.added, result.failed) == (2, 0), result
        assert (src / JOURNAL_NAME).read_text() == ""


async def test_mirror_counts_only_the_files_on_disk(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=3, rate=None) as portal:
        # Every attempt of the first two images answers too late (one at a time: the
        # order is known); the other four get through.
        portal.inject("delay", method="download", delay=LATE, times=2 * FAST_RETRY.max_attempts)
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED, timeout=TINY
        ) as client:
            result = await bx.mirror(
                client, [1, 2], tmp_path, via="rest", concurrency=1, warnings=io.StringIO()
            )
        await settle(portal, timeout=30)
    on_disk = [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix == ".png"]
    with contextlib.closing(sqlite3.connect(tmp_path / MANIFEST_NAME)) as db:
        (rows,) = db.execute("SELECT count(*) FROM files").fetchone()
    assert result.downloaded == len(on_disk) == rows
    assert (result.downloaded, result.failed, result.images) == (4, 2, 6)
