"""A job stopped before its first request prints its error alone, no summary: the same rule for
mirror and upload (issue 21, item 7 of the mirror half). A run that started prints its summary
however it ends (tests/cli/test_interrupt.py and the jobs' own tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import PNG, ThreadPortal, assert_one_error_line, run_cli

from bitrix_images.sync.manifest import MANIFEST_NAME
from bitrix_images.sync.upload import run as upload_run
from bitrix_images.sync.upload.journal import FolderLock

pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture
def served() -> Iterator[ThreadPortal]:
    portal = ThreadPortal(products=2, images_per_product=1)
    yield portal
    portal.close()


def folder(root: Path, *names: str) -> Path:
    (root / "1").mkdir(parents=True)
    for name in names:
        (root / "1" / name).write_bytes(PNG)
    return root


def never_started(served: ThreadPortal, result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert (code, out) == (1, "")  # no plan, no summary
    assert served.portal.counters.requests == 0
    return assert_one_error_line(err, served.portal.webhook_code)


def test_an_upload_whose_folder_is_locked(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    served: ThreadPortal,
    tmp_path: Path,
) -> None:
    # The command line waits 30 s for the lock; the test does not.
    monkeypatch.setitem(upload_run.upload.__kwdefaults__, "lock_wait", 0.0)
    src = folder(tmp_path / "src", "a.png")
    holder = FolderLock(src)
    assert holder.try_acquire()
    try:
        line = never_started(served, run_cli(capsys, "upload", "src", "--webhook", served.url))
    finally:
        holder.release()
    assert "another upload of src is running (pid " in line


def test_an_upload_with_two_detail_pictures(
    capsys: pytest.CaptureFixture[str], served: ThreadPortal, tmp_path: Path
) -> None:
    folder(tmp_path / "src", "detail@a.png", "detail@b.png")
    line = never_started(served, run_cli(capsys, "upload", "src", "--webhook", served.url))
    assert "1/detail@a.png and 1/detail@b.png are both the product's DETAIL_PICTURE" in line


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_mirror_whose_manifest_is_a_link(
    capsys: pytest.CaptureFixture[str], served: ThreadPortal, tmp_path: Path, dry_run: bool
) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / MANIFEST_NAME).symlink_to(tmp_path / "elsewhere")
    argv = ("mirror", "dest", "--product", "1", "--webhook", served.url)
    line = never_started(served, run_cli(capsys, *argv, *(["--dry-run"] if dry_run else [])))
    assert "is a symbolic link, not a regular file; refusing it" in line
