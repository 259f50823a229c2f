"""SIGKILL in the middle of ``upload`` and of ``mirror``, then resume: exact.

Real processes: the command line against a portal served by ``python -m bitrix_images.testing``.
The portal's bucket is slow enough that the kill usually lands mid-run; the assertions hold
wherever it lands (before the first request, or after the last).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from support import PNG_HEAD

import bitrix_images as bx
from bitrix_images.sync.manifest import MANIFEST_NAME
from bitrix_images.testing import FakePortal

PRODUCTS = 20
# The client keeps to half the portal's rate, and the portal lets a few requests bunch up: on a
# loaded machine requests sent in step arrive out of step, which a bucket of one would refuse.
PORTAL_RATE = ("--rate", "20", "--burst", "5")
RATE = ("--rate", "10", "--burst", "1")


@pytest.fixture(name="webhook")
def _webhook() -> Iterator[str]:
    server = subprocess.Popen(  # noqa: S603 -- our own interpreter and module
        [
            sys.executable,
            *("-m", "bitrix_images.testing", "--port", "0"),
            *("--products", str(PRODUCTS), "--images-per-product", "5", *PORTAL_RATE),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait(timeout=30)
        assert server.stdout is not None
        server.stdout.close()


def cli(*argv: str, webhook: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 -- our own interpreter and module
        [sys.executable, "-m", "bitrix_images", *argv, *RATE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BITRIX_WEBHOOK_URL": webhook},
    )


async def kill_when(process: subprocess.Popen[str], started: Callable[[], Awaitable[bool]]) -> None:
    """SIGKILL *process* once *started* says work is under way (or when it has ended)."""
    for _ in range(1200):  # a generous bound (minutes), never an assertion on time
        if process.poll() is not None or await started():
            break
        await asyncio.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return out


async def test_sigkill_during_mirror_then_resume_is_exact(webhook: str, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    argv = ("mirror", str(dest), "--iblock", "14")

    async def some_files() -> bool:
        return any(dest.glob("*/*.png"))

    await kill_when(cli(*argv, webhook=webhook), some_files)
    out = finish(cli(*argv, webhook=webhook))
    assert out.startswith(f"{PRODUCTS} products, {PRODUCTS * 5} images (")
    sample = FakePortal(products=PRODUCTS, images_per_product=5)  # the same seeded catalog
    expected = {
        f"{pid}/{image.name}": image.content
        for pid in sample.catalog.product_ids()
        for image in sample.catalog.images(pid)
    }
    found = {
        path.relative_to(dest).as_posix(): path.read_bytes()
        for path in dest.glob("*/*")
        if not path.name.startswith(".")  # a killed download's .part (issue 13)
    }
    assert found == expected
    with contextlib.closing(sqlite3.connect(dest / MANIFEST_NAME)) as db:
        assert db.execute("SELECT count(*) FROM files").fetchone() == (PRODUCTS * 5,)
    again = finish(cli(*argv, webhook=webhook))
    assert f"(0 downloaded, {PRODUCTS * 5} skipped)" in again


async def test_sigkill_during_upload_then_resume_is_exact(webhook: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    wanted: dict[int, set[str]] = {}
    for pid in range(1, PRODUCTS + 1):
        (src / str(pid)).mkdir(parents=True)
        wanted[pid] = {f"shot-{pid}-{n}.png" for n in range(6)}
        for name in wanted[pid]:
            (src / str(pid) / name).write_bytes(PNG_HEAD + name.encode() * 40)
    # Small batches: many requests, so that the kill lands between (or inside) them.
    argv = ("upload", str(src), "--max-request-bytes", "6000", "--settle-after", "6")
    # The portal's bucket is shared with the command line: wait out its refusals patiently.
    patient = bx.RetryPolicy(max_attempts=30, initial_delay=0.05, max_delay=0.5)
    client = bx.BitrixClient.from_webhook(
        webhook, retry=patient, rate_limit=bx.RateLimit(rate=5.0, burst=1)
    )

    async def on_portal() -> Counter[tuple[int, str | None]]:
        listing = client.images.list_many(wanted, select=["name", "productId"])
        return Counter([(image.product_id or 0, image.name) async for image in listing])

    async def some_added() -> bool:
        return any(name and name.startswith("shot-") for _, name in await on_portal())

    async with client:
        await kill_when(cli(*argv, webhook=webhook), some_added)
        out = finish(cli(*argv, webhook=webhook))
        assert out.startswith(f"{PRODUCTS} products, {PRODUCTS * 6} files (")
        images = await on_portal()
    for pid, names in wanted.items():
        for name in names:
            assert images[(pid, name)] == 1, (pid, name)
    assert sum(images.values()) == PRODUCTS * (5 + 6)
    again = finish(cli(*argv, webhook=webhook))
    assert f"(0 added, {PRODUCTS * 6} already there)" in again


# A process that uploads one folder, each add alone, settling an earlier run's adds after
# 6 s: longer than the 3 s the portal takes over the add below.
_UPLOAD_SCRIPT = """
import asyncio, sys
import bitrix_images as bx

async def main():
    client = bx.BitrixClient.from_webhook(sys.argv[1], rate_limit=bx.RateLimit(rate=50.0, burst=50))
    async with client:
        await bx.upload(client, sys.argv[2], pack=False, settle_after=6.0)

asyncio.run(main())
"""


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(600):  # a generous bound (a minute), never an assertion on time
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the condition never came true")


async def test_sigkill_while_the_portal_processes_an_add_then_again_at_once(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    (src / "1").mkdir(parents=True)
    (src / "1" / "front.png").write_bytes(PNG_HEAD)
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        # The portal takes 3 s over the add: the run is killed while it is processed.
        portal.inject("delay", method="catalog.productImage.add", delay=3.0)
        counters = portal.counters
        process = subprocess.Popen(  # noqa: S603 -- our own interpreter
            [sys.executable, "-c", _UPLOAD_SCRIPT, str(portal.webhook_url), str(src)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await wait_for(
                lambda: (
                    counters.by_method["catalog.productimage.add"] >= 1
                    or process.poll() is not None
                )
            )
        finally:
            process.send_signal(signal.SIGKILL)
            _, err = process.communicate(timeout=60)
        assert counters.by_method["catalog.productimage.add"] == 1, err
        assert not portal.catalog.images(1)  # still being processed
        async with bx.BitrixClient.from_webhook(portal.webhook_url) as client:
            result = await bx.upload(client, src, settle_after=6.0)
        # Every request answered (the killed one's add included), then: one image.
        await wait_for(lambda: sum(counters.by_status.values()) == sum(counters.by_method.values()))
        assert [image.name for image in portal.catalog.images(1)] == ["front.png"]
        assert (result.added, result.present) == (0, 1)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_stopped_upload_sums_up_and_names_the_adds_in_flight(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    src = tmp_path / "src"
    (src / "1").mkdir(parents=True)
    (src / "1" / "front.png").write_bytes(PNG_HEAD)
    async with FakePortal(products=1, images_per_product=0, rate=None) as portal:
        portal.inject("delay", method="catalog.productImage.add", delay=30.0)
        process = subprocess.Popen(  # noqa: S603 -- our own interpreter and module
            [sys.executable, "-m", "bitrix_images", "upload", str(src), "--one-per-request"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "BITRIX_WEBHOOK_URL": str(portal.webhook_url)},
        )
        try:
            await wait_for(
                lambda: (
                    portal.counters.by_method["catalog.productimage.add"] >= 1
                    or process.poll() is not None
                )
            )
        finally:
            process.send_signal(signum)
            out, err = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == status, err
    assert out.startswith("1 product, 1 file (0 added, 0 already there"), out
    assert "1 add was in flight, outcome unknown: 1/front.png" in err
