"""Mirror, verify and prune open only regular files (issue 21, findings 5 and 6): a FIFO where
a file was never hangs a run, a product folder that is a link is never entered by prune, and a
manifest that is a link is refused, never written through.

The FIFO cases run the real command line in its own process, with a generous timeout as the
failure detector: a thread blocked in ``open()`` of a FIFO cannot be stopped from inside."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import FAST_RETRY, UNLIMITED, ThreadPortal

import bitrix_images as bx
from bitrix_images.sync.manifest import MANIFEST_NAME
from bitrix_images.testing import FakePortal

ROOT = Path(__file__).resolve().parents[3]
PATIENCE = 60  # seconds: far beyond any run here; reached only by a run that hangs


@pytest.fixture(scope="module")
def served() -> Iterator[ThreadPortal]:
    portal = ThreadPortal(products=2, images_per_product=2)
    yield portal
    portal.close()


def mirror_cli(served: ThreadPortal, dest: Path, *options: str) -> subprocess.CompletedProcess[str]:
    argv = ("mirror", str(dest), "--product", "1", "--product", "2", *options)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(  # noqa: S603 -- our own interpreter and module
        [sys.executable, "-m", "bitrix_images", *argv, "--webhook", served.url],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )


def name_of(served: ThreadPortal, product_id: int, index: int) -> str:
    return served.call(lambda: served.portal.catalog.images(product_id)[index].name)


@pytest.mark.parametrize("verify", [False, True])
def test_a_fifo_where_a_recorded_file_was_is_reported_and_left_alone(
    served: ThreadPortal, tmp_path: Path, verify: bool
) -> None:
    dest = tmp_path / "dest"
    assert mirror_cli(served, dest).returncode == 0
    fifo = dest / "1" / name_of(served, 1, 0)
    fifo.unlink()
    os.mkfifo(fifo)
    done = mirror_cli(served, dest, *(["--verify"] if verify else []))
    # Reported, counted failed (the image is not on disk: cron must see it), the run goes on.
    assert done.returncode == 1, done.stderr
    assert f"1/{fifo.name} is a FIFO, not a regular file; left alone" in done.stderr
    assert "(0 downloaded, 3 skipped, 1 failed)" in done.stdout
    assert fifo.is_fifo()  # not replaced: not this tool's to replace


def test_a_fifo_where_a_file_goes_is_never_opened(served: ThreadPortal, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "1").mkdir(parents=True)
    name = name_of(served, 1, 0)
    os.mkfifo(dest / "1" / name)  # not recorded: compared by hash after the download
    done = mirror_cli(served, dest)
    assert done.returncode == 0, done.stderr
    assert "(4 downloaded, 0 skipped)" in done.stdout
    assert (dest / "1" / name).is_fifo()
    image_id = served.call(lambda: served.portal.catalog.images(1)[0].id)
    assert (dest / "1" / f"{image_id}-{name}").is_file()  # beside it


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_manifest_that_is_not_a_regular_file_is_refused(
    served: ThreadPortal, tmp_path: Path, kind: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    outside = tmp_path / "outside.sqlite"
    if kind == "fifo":
        os.mkfifo(dest / MANIFEST_NAME)
    else:
        (dest / MANIFEST_NAME).symlink_to(outside)
    for dry_run in ([], ["--dry-run"]):
        done = mirror_cli(served, dest, *dry_run)
        assert done.returncode == 1
        what = "a FIFO" if kind == "fifo" else "a symbolic link"
        assert f"{MANIFEST_NAME} is {what}, not a regular file; refusing it" in done.stderr
        assert done.stdout == ""  # no plan, no summary: the run never started
    assert not outside.exists()  # never created through the link
    assert not list((dest).glob("[0-9]*"))


async def test_a_link_beside_the_manifest_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside-wal"
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / f"{MANIFEST_NAME}-wal").symlink_to(outside)
    async with FakePortal(products=1, images_per_product=1, rate=None) as portal:
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
        ) as client:
            with pytest.raises(OSError, match="is a symbolic link, not a regular file"):
                await bx.mirror(client, [1], dest, warnings=io.StringIO())
        assert portal.counters.requests == 0
    assert not outside.exists()


async def test_prune_never_enters_a_product_folder_that_is_a_link(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
        ) as client:
            await bx.mirror(client, [1, 2], dest, warnings=io.StringIO())
            # The product's folder moves out of DEST and a link takes its place: the files
            # outside are byte for byte what the manifest recorded.
            (dest / "1").rename(outside)
            (dest / "1").symlink_to(outside)
            gone = portal.catalog.images(1)[0]
            portal.catalog.delete_image(1, gone.id)
            warnings = io.StringIO()
            result = await bx.mirror(client, [1, 2], dest, prune=True, warnings=warnings)
        assert (outside / gone.name).read_bytes() == gone.content  # nothing outside removed
        assert result.removed == 0
        assert f"1/{gone.name} is in a folder that is a link or not a folder (not entered)" in (
            warnings.getvalue()
        )


async def test_files_the_manifest_does_not_list_are_never_overwritten(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=1, rate=None) as portal:
        image = portal.catalog.images(1)[0]
        (tmp_path / "1").mkdir()
        mine = {image.name: b"mine", f"{image.id}-{image.name}": b"mine too"}
        for name, data in mine.items():
            (tmp_path / "1" / name).write_bytes(data)
        async with bx.BitrixClient.from_webhook(
            portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
        ) as client:
            result = await bx.mirror(client, [1], tmp_path, warnings=io.StringIO())
        assert result.downloaded == 1
        for name, data in mine.items():
            assert (tmp_path / "1" / name).read_bytes() == data
        assert (tmp_path / "1" / f"{image.id}-{image.id}-{image.name}").read_bytes() == (
            image.content
        )
