"""A mirror stopped by SIGTERM or SIGKILL, or left by its portal: real processes, real
signals, the embedded portal on loopback. Nothing here measures time; it waits for events
with generous limits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bitrix_images.sync import dest as _dest

PATIENCE = 90.0
# 60 products of 3 images; the portal's own bucket out of the way (the client keeps its own).
PORTAL = ("--products", "60", "--rate", "1000", "--burst", "1000")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def portal_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A portal of 60 products x 3 images in its own process; yields it and its webhook."""
    process = subprocess.Popen(  # noqa: S603 -- our own interpreter and module
        [sys.executable, "-m", "bitrix_images.testing", "--port", "0", *PORTAL],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    webhook = process.stdout.readline().strip()
    yield process, webhook
    if process.poll() is None:
        process.kill()
    process.wait(timeout=PATIENCE)
    process.stdout.close()


def start_mirror(dest: Path, webhook: str, *extra: str) -> subprocess.Popen[str]:
    ids = [f"--product={n}" for n in range(1, 61)]
    return subprocess.Popen(  # noqa: S603 -- our own interpreter and module
        [sys.executable, "-m", "bitrix_images", "mirror", str(dest), *ids, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BITRIX_WEBHOOK_URL": webhook},
    )


def under_way(dest: Path, webhook: str, rate: str = "2") -> subprocess.Popen[str]:
    """A mirror slowed to *rate* requests a second, once its first images are on disk."""
    mirror = start_mirror(dest, webhook, "--rate", rate, "--burst", "1")
    wait_until(lambda: images_in(dest) >= 2, "the first images")
    return mirror


def images_in(dest: Path) -> int:
    return sum(1 for path in dest.rglob("*.png"))


def parts_in(dest: Path) -> list[Path]:
    return [path for path in dest.rglob("*") if path.name.endswith(".part")]


def test_sigterm_is_handled_like_ctrl_c(
    portal_process: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    _, webhook = portal_process
    dest = tmp_path / "out"
    # Two requests a second: the run is still going when the signal comes.
    mirror = under_way(dest, webhook)
    mirror.send_signal(signal.SIGTERM)
    out, err = mirror.communicate(timeout=PATIENCE)
    assert mirror.returncode == 143, err
    assert "interrupted" in err
    assert "Traceback" not in err
    # The summary of what was done before the signal.
    summary = out.strip().splitlines()[-1]
    assert " products, " in summary
    assert "downloaded" in summary
    assert parts_in(dest) == []


def test_sigkill_leftovers_are_removed_on_resume(
    portal_process: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    _, webhook = portal_process
    dest = tmp_path / "out"
    mirror = under_way(dest, webhook)
    mirror.kill()
    mirror.communicate(timeout=PATIENCE)
    # Whatever the kill left, plus one planted as a dead run's of this host would be.
    folder = dest / "1"
    fd, planted = tempfile.mkstemp(
        prefix=_dest.temp_prefix().rsplit("-", 2)[0] + f"-{mirror.pid}-",
        suffix=_dest.TEMP_SUFFIX,
        dir=folder,
    )
    os.close(fd)
    someone_elses = folder / ".photo-1.png.part"
    someone_elses.write_text("not ours")

    resumed = start_mirror(dest, webhook, "--rate", "1000", "--burst", "1000")
    out, err = resumed.communicate(timeout=PATIENCE)
    assert resumed.returncode == 0, err
    assert "180 images" in out
    assert not Path(planted).exists()
    assert parts_in(dest) == [someone_elses]
    assert images_in(dest) == 180


def test_a_dead_portal_stops_the_run_promptly_with_one_error_and_the_summary(
    portal_process: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    portal, webhook = portal_process
    dest = tmp_path / "out"
    mirror = under_way(dest, webhook, rate="4")
    portal.kill()
    portal.wait(timeout=PATIENCE)
    out, err = mirror.communicate(timeout=PATIENCE * 3)
    assert mirror.returncode == 1, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    warnings = [line for line in err.splitlines() if ": warning: " in line]
    assert len(errors) == 1, err
    assert "not answering" in errors[0] or "cannot connect" in errors[0]
    # Not one warning per image: the run stops once every request fails.
    assert len(warnings) <= 4 + 2, err
    assert "downloaded" in out.strip().splitlines()[-1]
    assert parts_in(dest) == []
