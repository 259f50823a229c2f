"""Small things users hit in the command line: --version, --allow-insecure, a directory for
``add``, ``list --select`` before ids, ``product_id`` on every line of several products, a
missing product among several, and portal text that holds terminal escape sequences."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from support import Terminal, ThreadPortal, assert_one_error_line, ndjson, run_cli

import bitrix_images as bx
from bitrix_images._wire.auth import is_loopback

pytestmark = pytest.mark.usefixtures("cli_env")

HOSTILE = "\x1b]0;PWNED-TITLE\x07\x1b[2J\rfake line\x9b31m\u202egnp.exe"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"bitrix-images {bx.__version__}"


def test_plain_http_to_another_host_needs_allow_insecure(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    webhook = served.url.replace("127.0.0.1", "portal.example.com")
    code, _, err = run_cli(capsys, "fields", "--webhook", webhook)
    assert code == 1
    line = assert_one_error_line(err, served.portal.webhook_code)
    assert "plain http to portal.example.com" in line
    assert "--allow-insecure" in line


def _loopback_by_name() -> str | None:
    """This machine's host name when it resolves to 127.0.0.1 (as in most containers)."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:  # pragma: no cover -- depends on the machine
        return None
    return name if addresses == {"127.0.0.1"} else None


def test_allow_insecure_reaches_a_plain_http_portal(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _loopback_by_name()
    if name is None or is_loopback(name):  # pragma: no cover -- depends on the machine
        pytest.skip("this machine's name does not resolve to 127.0.0.1 only")
    # A host that is not loopback by its name, served by the portal on loopback.
    webhook = served.url.replace("127.0.0.1", name)
    assert run_cli(capsys, "fields", "--webhook", webhook)[0] == 1
    assert served.portal.counters.requests == 0
    code, out, err = run_cli(capsys, "fields", "--allow-insecure", "--webhook", webhook)
    assert (code, err) == (0, "")
    assert "product_id" in ndjson(out)[0]
    code, _, _ = run_cli(capsys, "--allow-insecure", "fields", "--webhook", webhook)
    assert code == 0


def test_add_a_directory_says_so_before_any_request(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    code, _, err = run_cli(capsys, "add", "1", str(tmp_path), "--webhook", served.url)
    assert code == 1
    assert "is a directory" in assert_one_error_line(err)
    assert served.portal.counters.requests == 0


def test_select_takes_one_value_and_the_ids_stay_ids(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "list", "--select", "name", "1", "2", "--webhook", served.url)
    assert (code, err) == (0, "")
    rows = ndjson(out)
    # product_id is printed although not selected: lines of several products need it.
    assert {tuple(row) for row in rows} == {("id", "name", "product_id")}
    assert [row["product_id"] for row in rows] == [1, 1, 1, 2, 2, 2]

    code, out, _ = run_cli(
        capsys, "list", "--select", "name, type", "--select", "id", "3", "--webhook", served.url
    )
    assert code == 0
    assert list(ndjson(out)[0]) == ["id", "name", "type"]


@pytest.mark.parametrize(
    ("ids", "listed"),
    [
        (["99999999", "2", "3"], [2, 3]),
        (["2", "99999999", "3"], [2, 3]),
        (["2", "3", "99999999"], [2, 3]),
        (["99999999", "99999998"], []),
    ],
)
def test_list_names_a_missing_product_and_goes_on(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], ids: list[str], listed: list[int]
) -> None:
    code, out, err = run_cli(capsys, "list", *ids, "--webhook", served.url)
    assert code == 1
    assert sorted({row["product_id"] for row in ndjson(out)}) == listed
    warnings = [line for line in err.splitlines() if ": warning: " in line]
    missing = [i for i in ids if i.startswith("9999999")]
    assert len(warnings) == len(missing)
    for product_id, warning in zip(missing, warnings, strict=True):
        assert f"product {product_id} skipped" in warning
    products = "1 product" if len(missing) == 1 else f"{len(missing)} products"
    assert f"{products} could not be listed" in err.splitlines()[-1]


def test_list_stops_on_an_error_every_product_would_share(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    served.call(
        served.portal.inject,
        "command_error",
        times=100,
        method="catalog.productImage.list",
        body={"error": "ERROR_ARGUMENT", "error_description": "bad"},
    )
    code, _, err = run_cli(capsys, "list", "1", "2", "--webhook", served.url)
    assert code == 1
    assert "ERROR_ARGUMENT" in assert_one_error_line(err)


def test_terminal_escapes_in_an_error_are_shown_not_obeyed(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    served.call(
        served.portal.inject,
        "error",
        status=400,
        body={"error": "ERROR_ARGUMENT", "error_description": HOSTILE},
    )
    code, _, err = run_cli(capsys, "fields", "--webhook", served.url)
    assert code == 1
    line = assert_one_error_line(err)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in line)
    assert "\\x1b]0;PWNED-TITLE\\x07\\x1b[2J" in line
    assert "\\u202e" in line


def test_sigterm_in_process_is_one_line_and_143(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    portal = served.portal
    served.call(portal.inject, "delay", method="catalog.productImage.getFields", delay=60)

    def terminate_once_asked() -> None:
        deadline = time.monotonic() + 60
        while portal.counters.requests == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_asked)
    killer.start()
    try:
        code, out, err = run_cli(capsys, "fields", "--webhook", served.url)
    finally:
        killer.join()
    assert (code, out) == (143, "")
    assert err == "bitrix-images: interrupted (SIGTERM)\n"


def test_mirror_into_a_regular_file_says_not_a_directory(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "taken").write_text("")
    code, out, err = run_cli(capsys, "mirror", "taken", "--product", "1", "--webhook", served.url)
    assert (code, out) == (1, "")
    assert assert_one_error_line(err) == "bitrix-images: error: taken is not a directory"
    assert served.portal.counters.requests == 0


def test_mirror_into_an_unwritable_dest_says_so(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    # /proc/self is a directory no one can create files in, root included.
    code, _, err = run_cli(
        capsys, "mirror", "/proc/self", "--product", "1", "--webhook", served.url
    )
    assert code == 1
    line = assert_one_error_line(err)
    assert "cannot write to /proc/self" in line
    assert ".part" not in line
    assert served.portal.counters.requests == 0


@pytest.mark.parametrize("source", ["iblock", "file"])
def test_the_bar_knows_the_total(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    source: str,
) -> None:
    served = ThreadPortal(products=60, images_per_product=1, page_mode="offset")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    ids = tmp_path / "ids.txt"
    ids.write_text("# all of them\n" + "".join(f"{n}\n" for n in range(1, 61)))
    chosen = ("--iblock", "14") if source == "iblock" else ("--products-file", str(ids))
    try:
        code, out, _ = run_cli(
            capsys, "mirror", "out", *chosen, "--rate", "1000", "--webhook", served.url
        )
    finally:
        served.close()
    assert code == 0
    assert out.startswith("60 products, 60 images (60 downloaded")
    shown = terminal.getvalue()
    # catalog.product.list's total (50 a page: learnt on the first), or the file counted.
    assert "60/60 products" in shown
    assert "100%" in shown
    assert "60 downloaded" in shown


def test_upload_warnings_escape_file_names(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "src" / "1"
    folder.mkdir(parents=True)
    (folder / "\x1b]0;PWNED\x07notes.txt").write_text("not an image")
    _, _, err = run_cli(capsys, "upload", str(tmp_path / "src"), "--webhook", served.url)
    warnings = [line for line in err.splitlines() if ": warning: " in line]
    assert warnings, err
    assert "\\x1b]0;PWNED\\x07notes.txt" in warnings[0]
    assert "\x1b" not in err
