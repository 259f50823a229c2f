"""``bitrix-images mirror --prune/--dry-run/--verify/--shard`` and ``bitrix-images upload``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import PNG_HEAD, Terminal, ThreadPortal, assert_one_error_line, run_cli

from bitrix_images.testing import INVALID_CREDENTIALS

NOT_FOUND_TEXT = "Product was not found"


pytestmark = [
    pytest.mark.usefixtures("cli_env"),
    pytest.mark.served(products=6, images_per_product=2),
]


def test_mirror_prune_dry_run_then_prune(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ("mirror", "out", "--product", "1", "--product", "2", "--webhook", served.url)
    assert run_cli(capsys, *argv)[0] == 0
    gone = served.portal.catalog.images(1)[0]
    served.call(served.portal.catalog.delete_image, 1, gone.id)
    kept = [f"{i.product_id}/{i.name}" for p in (1, 2) for i in served.portal.catalog.images(p)]
    code, out, _ = run_cli(capsys, *argv, "--prune", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    # Prune's removals come after every listing: after the files kept.
    assert lines[0:3] == [f"= {path}" for path in kept]
    assert lines[3] == f"- 1/{gone.name} (id {gone.id})"
    assert "0 to download, 3 skipped, 1 to remove)" in lines[-1]
    assert (tmp_path / "out" / "1" / gone.name).exists()
    code, out, _ = run_cli(capsys, *argv, "--prune", "--verify")
    assert code == 0
    assert "(0 downloaded, 3 skipped, 1 removed)" in out
    assert not (tmp_path / "out" / "1" / gone.name).exists()


def test_mirror_shard_keeps_its_share(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, _ = run_cli(
        capsys, "mirror", "out", "--iblock", "14", "--shard", "1/3", "--webhook", served.url
    )
    assert code == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir() if path.is_dir()) == [
        "1",
        "4",
    ]
    code, _, _ = run_cli(
        capsys,
        *("mirror", "out2", "--product", "2", "--product", "5", "--product", "3"),
        *("--shard", "2/3", "--webhook", served.url),
    )
    assert code == 0
    assert sorted(path.name for path in (tmp_path / "out2").iterdir() if path.is_dir()) == [
        "2",
        "5",
    ]


@pytest.mark.parametrize("shard", ["3/3", "x/2", "1", "1/0"])
def test_a_bad_shard_is_a_usage_error(capsys: pytest.CaptureFixture[str], shard: str) -> None:
    code, _, err = run_cli(capsys, "mirror", "out", "--product", "1", "--shard", shard)
    assert code == 2
    assert "K/N" in err


def test_upload_plan_then_upload_then_nothing(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "photos" / "3"
    folder.mkdir(parents=True)
    (folder / "detail@front.png").write_bytes(PNG_HEAD + b"front")
    (folder / "side.png").write_bytes(PNG_HEAD + b"side")
    (folder / "notes.txt").write_text("no image")
    argv = ("upload", "photos", "--webhook", served.url)
    code, out, err = run_cli(capsys, *argv, "--prune", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    detail = next(i for i in served.portal.catalog.images(3) if i.type == "DETAIL_PICTURE")
    assert f"~ 3/detail@front.png replaces {detail.name!r} (id {detail.id})" in lines
    assert "+ 3/side.png" in lines
    assert sum(line.startswith("- 3/") for line in lines) == 2
    assert lines[-1].startswith("1 product, 2 files (2 to add, 0 already there, 2 to delete")
    assert "3/notes.txt: not a JPEG" in err

    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    assert out.startswith("1 product, 2 files (2 added, 0 already there; 1 not images")
    kinds = {image.name: image.type for image in served.portal.catalog.images(3)}
    assert kinds["front.png"] == "DETAIL_PICTURE"  # it replaced the seeded detail picture
    assert kinds["side.png"] == "MORE_PHOTO"

    code, out, _ = run_cli(capsys, *argv, "--one-per-request", "--max-request-bytes", "1000")
    assert code == 0
    assert "(0 added, 2 already there" in out


def test_upload_reports_a_missing_product(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "photos" / "999").mkdir(parents=True)
    (tmp_path / "photos" / "999" / "a.png").write_bytes(PNG_HEAD + b"a")
    code, out, err = run_cli(capsys, "upload", "photos", "--webhook", served.url)
    assert code == 1
    assert "1 product could not be listed" in out
    assert f"product 999 skipped: {NOT_FOUND_TEXT}" in err
    assert err.strip().splitlines()[-1].startswith("bitrix-images: error: 1 product could not")


def test_upload_failures_exit_1(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    served.call(served.portal.catalog.deny_write, 2)
    (tmp_path / "photos" / "2").mkdir(parents=True)
    (tmp_path / "photos" / "2" / "a.png").write_bytes(PNG_HEAD + b"a")
    (tmp_path / "photos" / "2" / "b.png").write_bytes(PNG_HEAD + b"b")
    code, out, err = run_cli(capsys, "upload", "photos", "--webhook", served.url)
    assert code == 1
    assert "2 failed" in out
    assert "2/a.png: Access Denied" in err
    assert "2 files or images failed" in err


def test_upload_of_a_missing_folder_is_one_error_line(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "upload", "nowhere", "--webhook", served.url)
    assert (code, out) == (1, "")
    assert err == "bitrix-images: error: not a directory: nowhere\n"


def test_upload_stopped_by_the_portal_still_prints_its_summary(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for product_id in (1, 2):
        (tmp_path / "photos" / str(product_id)).mkdir(parents=True)
        (tmp_path / "photos" / str(product_id) / "a.png").write_bytes(PNG_HEAD + b"a")
    served.call(served.portal.inject, "error", method="batch", status=401, body=INVALID_CREDENTIALS)
    code, out, err = run_cli(capsys, "upload", "photos", "--webhook", served.url)
    assert code == 1
    # What was done before the run stopped: the folder was read, nothing added.
    assert out.startswith("2 products, 2 files (0 added, 0 already there) in ")
    assert "INVALID_CREDENTIALS" in assert_one_error_line(err, served.portal.webhook_code)


def test_upload_shows_a_progress_bar_on_a_terminal(
    served: ThreadPortal,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    (tmp_path / "photos" / "3").mkdir(parents=True)
    (tmp_path / "photos" / "3" / "a.png").write_bytes(PNG_HEAD + b"a")
    (tmp_path / "photos" / "3" / "notes.txt").write_text("no image")
    code, out, _ = run_cli(capsys, "upload", "photos", "--webhook", served.url)
    assert code == 0
    assert out.startswith("1 product, 1 file (1 added, ")
    shown = terminal.getvalue()
    assert "upload: 100%" in shown
    assert "1/1 products" in shown
    assert "1 added" in shown
    assert "bitrix-images: warning: 3/notes.txt: not a JPEG" in shown


def test_upload_max_delete_and_max_file_size(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "photos" / "3"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(PNG_HEAD + bytes(100))
    (folder / "big.png").write_bytes(PNG_HEAD + bytes(5000))
    before = len(served.portal.catalog.images(3))
    argv = ("upload", "photos", "--webhook", served.url, "--prune", "--max-file-size", "1000")
    code, out, err = run_cli(capsys, *argv, "--max-delete", "1")
    assert code == 1
    assert f"prune would delete {before} images; nothing deleted: more than max_delete (1)" in err
    assert "3/big.png: 5029 bytes, larger than the 1000 allowed (--max-file-size)" in err
    assert f"{before} deletes held back" in out
    assert len(served.portal.catalog.images(3)) == before + 1
