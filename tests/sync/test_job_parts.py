"""The parts a long job stands on: DEST checks, stale temporary files of dead runs, which
errors stop a job, a portal that is down, and the progress bar (real files in a tmp dir,
real processes)."""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import Terminal

import bitrix_images as bx
from bitrix_images.sync import dest as _dest
from bitrix_images.sync.health import PortalHealth
from bitrix_images.sync.ids import count_ids
from bitrix_images.sync.progress import Progress

# --- DEST ---------------------------------------------------------------------------------


def test_prepare_dest_creates_it(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b"
    _dest.prepare_dest(dest)
    assert dest.is_dir()
    assert list(dest.iterdir()) == []  # the probe is gone
    _dest.prepare_dest(dest)  # again: fine


def test_a_regular_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(NotADirectoryError) as caught:
        _dest.prepare_dest(tmp_path / "taken")
    assert str(caught.value) == f"{tmp_path / 'taken'} is not a directory"
    assert caught.value.errno == errno.ENOTDIR
    with pytest.raises(NotADirectoryError, match="not a directory"):
        _dest.prepare_dest(tmp_path / "taken" / "below")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_dest_cannot_be_written(tmp_path: Path) -> None:  # pragma: no cover
    dest = tmp_path / "ro"
    dest.mkdir()
    dest.chmod(0o500)
    try:
        with pytest.raises(OSError, match=f"cannot write to {dest}: Permission denied"):
            _dest.prepare_dest(dest)
    finally:
        dest.chmod(0o700)


def test_an_unwritable_dest_says_so(tmp_path: Path) -> None:
    # Even root cannot create files in /proc: a real EACCES/ENOENT-style refusal.
    with pytest.raises(OSError, match="cannot write to /proc/self"):
        _dest.prepare_dest(Path("/proc/self"))


# --- stale temporary files ------------------------------------------------------------------


def dead_pid() -> int:
    code = "import os; print(os.getpid())"
    process = subprocess.run(  # noqa: S603 -- our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return int(process.stdout)


def make_temp(folder: Path, prefix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=_dest.TEMP_SUFFIX, dir=folder)
    os.close(fd)
    return Path(name)


def test_remove_stale_removes_only_dead_runs_of_this_host(tmp_path: Path) -> None:
    mine = _dest.temp_prefix()
    host = mine.split("-")[1]
    dead = make_temp(tmp_path, f".bxi-{host}-{dead_pid()}-")
    alive = make_temp(tmp_path, mine)
    parent = make_temp(tmp_path, f".bxi-{host}-{os.getppid()}-")  # pytest's parent: alive
    other_host = make_temp(tmp_path, f".bxi-{'0000' if host != '0000' else '1111'}-1-")
    users = tmp_path / ".photo.png.part"
    users.write_text("someone else's")
    link = tmp_path / f".bxi-{host}-{dead_pid()}-abcdefgh.part"
    link.symlink_to(users)
    folder = tmp_path / f".bxi-{host}-{dead_pid()}-zzzzzzzz.part"
    folder.mkdir()

    assert _dest.remove_stale(tmp_path) == 1
    assert not dead.exists()
    for kept in (alive, parent, other_host, users, link, folder):
        assert os.path.lexists(kept), kept
    assert _dest.remove_stale(tmp_path / "missing") == 0


def test_a_pid_of_another_user_counts_as_alive(tmp_path: Path) -> None:
    host = _dest.temp_prefix().split("-")[1]
    init = make_temp(tmp_path, f".bxi-{host}-1-")  # pid 1 exists (EPERM for non-root)
    assert _dest.remove_stale(tmp_path) == 0
    assert init.exists()


@pytest.mark.parametrize(
    ("code", "stops"),
    [
        (errno.ENOSPC, True),
        (errno.EROFS, True),
        (errno.EIO, True),
        (errno.ENAMETOOLONG, False),
        (errno.ELOOP, False),
        (errno.EACCES, False),
        (errno.EEXIST, False),
        (None, False),
    ],
)
def test_stops_the_job(code: int | None, stops: bool) -> None:
    error = OSError(code, "x") if code is not None else OSError("x")
    assert _dest.stops_the_job(error) is stops


# --- a portal that is down ------------------------------------------------------------------


def test_three_failures_in_a_row_mean_the_portal_is_down() -> None:
    health = PortalHealth()
    refused = bx.TransportError("cannot connect to the portal: refused", method="download")
    assert health.failed(refused) is None
    assert health.failed(bx.ServerError("boom", status=502, method="download")) is None
    down = health.failed(refused)
    assert isinstance(down, bx.TransportError)
    assert "the portal is not answering (3 downloads in a row failed" in str(down)
    assert "cannot connect to the portal: refused" in str(down)


def test_an_answer_or_a_success_starts_the_count_again() -> None:
    health = PortalHealth(down_after=2)
    refused = bx.TransportError("cannot connect", method="download")
    assert health.failed(refused) is None
    health.succeeded()
    assert health.failed(refused) is None
    assert health.failed(bx.NotFound("gone", method="download")) is None  # the portal answered
    assert health.failed(refused) is None
    lost = bx.OutcomeUnknown("lost", method="catalog.productImage.add")
    assert health.failed(lost) is None
    assert health.failed(refused) is None
    assert health.failed(refused) is not None


# --- the progress bar -----------------------------------------------------------------------


def test_a_known_total_shows_percent_and_eta() -> None:
    screen = Terminal()
    bar = Progress(screen, screen, total=4)
    bar.skip(1, "b.png", 6)
    bar.product_done()
    bar.add_download(1000, 1, "a.png", 5)
    bar.add_download(500, 1, "a.png", 5)
    bar.fail(1, "c.png", 7, "refused")
    bar.product_done()
    bar.warn("product 2, image 9 (\x1b[2Jx.png): refused")
    bar.close()
    shown = screen.getvalue()
    assert "50%" in shown
    assert "2/4 products" in shown
    assert "<" in shown  # elapsed<remaining
    assert "2 downloaded (" in shown
    assert "1 skipped" in shown
    assert "1 failed" in shown
    assert "1.5 kB" in shown
    assert "bitrix-images: warning: product 2, image 9 (\\x1b[2Jx.png): refused" in shown
    assert "\x1b[2J" not in shown


def test_a_total_learnt_later() -> None:
    screen = Terminal()
    bar = Progress(screen, screen)
    bar.product_done()
    bar.set_total(2)
    bar.product_done()
    bar.set_total(5)  # the first total stays
    bar.close()
    shown = screen.getvalue()
    assert "100%" in shown
    assert "2/2 products" in shown


def test_no_bar_warnings_are_plain_lines_or_log_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = io.StringIO()
    bar = Progress(None, out)
    bar.add_download(10, 1, "a.png", 5)
    bar.skip(1, "b.png", 6)
    bar.set_total(3)
    bar.product_done()
    bar.warn("a\nb")
    bar.close()
    assert out.getvalue() == "bitrix-images: warning: a\\x0ab\n"
    assert (bar.downloaded, bar.skipped, bar.bytes) == (1, 1, 10)
    with caplog.at_level(logging.WARNING, logger="bitrix_images"):
        Progress(None, None).warn("c\x1b")
    assert caplog.records[-1].getMessage() == "c\\x1b"


def test_count_ids(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n\n# a comment\n2 # two\n  \n3\n")
    assert count_ids(ids) == 3
    assert count_ids(tmp_path) is None
    assert count_ids(tmp_path / "missing") is None
    assert count_ids(Path("/proc/self/mem")) is None  # a file that cannot be read
