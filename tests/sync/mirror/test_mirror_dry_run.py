"""mirror --dry-run checks DEST as a real run does (issue 21, finding 9): a DEST that is a file,
or under a file, or closed to us, is the real run's error, exit 1 and no plan."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ThreadPortal, run_cli

pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture(scope="module")
def served() -> Iterator[ThreadPortal]:
    portal = ThreadPortal(products=1, images_per_product=2)
    yield portal
    portal.close()


def both(
    capsys: pytest.CaptureFixture[str], served: ThreadPortal, dest: str
) -> list[tuple[int, str, str]]:
    """The dry run's and the real run's status, output and errors."""
    base = ("mirror", dest, "--product", "1", "--webhook", served.url)
    return [run_cli(capsys, *base, "--dry-run"), run_cli(capsys, *base)]


@pytest.mark.parametrize("dest", ["a-file", "a-file/below"])
def test_a_dest_that_is_not_a_directory(
    capsys: pytest.CaptureFixture[str], served: ThreadPortal, tmp_path: Path, dest: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    dry, real = both(capsys, served, dest)
    assert dry == real
    code, out, err = dry
    assert (code, out) == (1, "")
    assert err == f"bitrix-images: error: {dest} is not a directory\n"
    assert (tmp_path / "a-file").read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_dest_closed_to_us(
    capsys: pytest.CaptureFixture[str], served: ThreadPortal, tmp_path: Path
) -> None:
    (tmp_path / "closed").mkdir(mode=0o555)
    for dest in ("closed", "closed/new"):
        dry, real = both(capsys, served, dest)
        assert dry[0] == real[0] == 1
        assert dry[1] == ""
        assert f"cannot write to {dest}: Permission denied" in dry[2]
        assert f"cannot write to {dest}:" in real[2]


def test_a_dry_run_into_a_new_folder_still_creates_nothing(
    capsys: pytest.CaptureFixture[str], served: ThreadPortal, tmp_path: Path
) -> None:
    code, out, _ = run_cli(
        capsys, "mirror", "new/deeper", "--product", "1", "--dry-run", "--webhook", served.url
    )
    assert code == 0
    assert out.startswith("+ 1/")
    assert not (tmp_path / "new").exists()
