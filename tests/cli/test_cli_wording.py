"""Wording and early checks: singular and plural, "product 5 not found", products files
refused before any request, one naming style in ``list``, ``--select`` and ``fields``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import PNG, ThreadPortal, assert_one_error_line, ndjson, run_cli

pytestmark = pytest.mark.usefixtures("cli_env")

SNAKE = re.compile(r"^[a-z]+(_[a-z]+)*$")


@pytest.mark.served(products=1, images_per_product=1)
def test_one_product_is_singular(served: ThreadPortal, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "catalogs", "--webhook", served.url)
    assert code == 0
    assert out.split("\t")[1] == "1 product"


@pytest.mark.served(products=3, images_per_product=1)
def test_one_missing_product_among_several_is_singular(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "list", "1", "5", "--webhook", served.url)
    assert code == 1
    assert "bitrix-images: warning: product 5 skipped: not found" in err
    assert err.splitlines()[-1] == (
        "bitrix-images: error: 1 product could not be listed (see the warnings)"
    )


@pytest.mark.served(products=3, images_per_product=1)
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "5"], "product 5 not found"),
        (["get", "5", "1"], "product 5 not found"),
        (["get", "1", "999"], "image 999 of product 1 not found"),
        (["delete", "5", "1"], "product 5 not found"),
        (["delete", "1", "999"], "image 999 of product 1 not found"),
        (["add", "5", "cover.png"], "product 5 not found"),
    ],
)
def test_not_found_names_the_product(
    served: ThreadPortal,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    (tmp_path / "cover.png").write_bytes(PNG)
    code, out, err = run_cli(capsys, *argv, "--webhook", served.url)
    assert (code, out) == (1, "")
    assert assert_one_error_line(err) == f"bitrix-images: error: {message}"


def test_a_missing_products_file_is_no_such_file(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "mirror", "out", "--products-file", "nosuch.txt", "--webhook", served.url
    )
    assert code == 1
    assert assert_one_error_line(err) == "bitrix-images: error: no such file: nosuch.txt"
    assert "Errno" not in err
    assert served.portal.counters.requests == 0


def test_a_products_file_that_is_a_folder(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "ids").mkdir()
    code, _, err = run_cli(
        capsys, "mirror", "out", "--products-file", "ids", "--webhook", served.url
    )
    assert code == 1
    assert "ids is a directory, not a products file" in assert_one_error_line(err)
    assert served.portal.counters.requests == 0


def test_an_unreadable_products_file(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    code, _, err = run_cli(
        capsys, "mirror", "out", "--products-file", "photo.png", "--webhook", served.url
    )
    assert code == 1
    line = assert_one_error_line(err)
    assert line == "bitrix-images: error: photo.png is not a text file of product ids"
    # A name the file system cannot open (too long): its reason, not a raw [Errno ...].
    code, _, err = run_cli(
        capsys, "mirror", "out", "--products-file", "x" * 300, "--webhook", served.url
    )
    assert code == 1
    line = assert_one_error_line(err)
    assert line.startswith("bitrix-images: error: cannot read xxx")
    assert line.endswith(": File name too long")
    assert served.portal.counters.requests == 0


def test_a_bad_line_is_reported_before_anything_is_mirrored(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    listing = tmp_path / "ids.txt"
    listing.write_text("1\n2\n# fine so far\nthree\n4\n")
    code, out, err = run_cli(
        capsys, "mirror", "out", "--products-file", "ids.txt", "--webhook", served.url
    )
    assert (code, out) == (1, "")
    line = assert_one_error_line(err)
    assert line == "bitrix-images: error: ids.txt, line 4: not a product id: 'three'"
    assert served.portal.counters.requests == 0
    assert not (tmp_path / "out" / "1").exists()


def test_a_products_file_that_cannot_be_read_twice_is_streamed_unchecked(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not a regular file (a pipe, a device): read once, as it comes, with no total for the bar.
    code, out, _ = run_cli(
        capsys, "mirror", "out", "--products-file", "/dev/null", "--webhook", served.url
    )
    assert code == 0
    assert out.startswith("0 products")


def test_a_good_products_file_is_read_whole_after_its_check(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "ids.txt").write_text("1\n2\n")
    code, out, _ = run_cli(
        capsys, "mirror", "out", "--products-file", "ids.txt", "--webhook", served.url
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["1", "2"]
    assert out.startswith("2 products")


@pytest.mark.parametrize("names", ["create_time,product_id", "createTime,productId"])
def test_select_takes_both_names_and_lists_one_style(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], names: str
) -> None:
    code, out, _ = run_cli(capsys, "list", "1", "--select", names, "--webhook", served.url)
    assert code == 0
    for row in ndjson(out):
        assert list(row) == ["id", "product_id", "create_time"]


def test_fields_prints_one_naming_style(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "fields", "--webhook", served.url)
    assert code == 0
    fields = json.loads(out)
    keys = set(fields) | {key for info in fields.values() for key in info}
    assert all(SNAKE.match(key) for key in keys), sorted(keys)
    assert fields["create_time"]["wire_name"] == "createTime"
    # Every key fields prints, --select takes.
    code, _, _ = run_cli(capsys, "list", "1", "--select", ",".join(fields), "--webhook", served.url)
    assert code == 2  # download_url still needs --with-download-url
    selected = ",".join(name for name in fields if name != "download_url")
    assert run_cli(capsys, "list", "1", "--select", selected, "--webhook", served.url)[0] == 0
