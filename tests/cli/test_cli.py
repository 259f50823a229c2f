"""The ``bitrix-images`` command line, against the embedded portal on loopback.

Most tests call ``main([...])`` in-process (the portal runs in a background thread with its
own event loop, because ``main`` runs ``asyncio.run``); a few run the real console script
as a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import runpy
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yarl
from support import (
    PNG_HEAD,
    Terminal,
    ThreadPortal,
    assert_one_error_line,
    ndjson,
    oauth_env,
    run_cli,
)

import bitrix_images as bx
from bitrix_images import cli
from bitrix_images.cli import app
from bitrix_images.cli.output import scrub
from bitrix_images.cli.portal import Portal
from bitrix_images.sync import ids as _ids
from bitrix_images.sync.progress import human_size
from bitrix_images.testing import INVALID_CREDENTIALS, FakePortal, demo_portal

ACCESS_DENIED = {"error": "ACCESS_DENIED", "error_description": "Access denied."}


pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production backoff takes seconds: the CLI's clients retry within milliseconds here."""
    original = bx.BitrixClient.from_webhook

    def quick(url: str, **options: Any) -> bx.BitrixClient:
        retry = bx.RetryPolicy(initial_delay=0.001, max_delay=0.002)
        return original(url, retry=retry, **options)

    monkeypatch.setattr(bx.BitrixClient, "from_webhook", quick)


def png(tag: bytes = b"") -> bytes:
    return PNG_HEAD + tag


# --- list, get, fields --------------------------------------------------------------------


def test_list_one_product_prints_ndjson_without_download_url(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "list", "2", "--webhook", served.url)
    assert (code, err) == (0, "")
    rows = ndjson(out)
    expected = served.portal.catalog.images(2)
    assert [row["id"] for row in rows] == [image.id for image in expected]
    first = rows[0]
    assert list(first) == ["id", "name", "product_id", "type", "create_time", "detail_url"]
    assert first["name"] == expected[0].name
    assert first["product_id"] == 2
    assert first["type"] == expected[0].type
    assert datetime.fromisoformat(first["create_time"]) == expected[0].created
    assert first["detail_url"].startswith(str(served.portal.origin))
    assert served.portal.webhook_code not in out


def test_list_many_products_uses_batch(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "--webhook", served.url, "list", "3", "1", "2")
    assert code == 0
    rows = ndjson(out)
    assert [row["product_id"] for row in rows] == [3] * 3 + [1] * 3 + [2] * 3
    assert served.portal.counters.by_method["batch"] == 1
    assert "catalog.productimage.list" not in served.portal.counters.by_method


def test_list_select_and_download_url(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "list", "1", "--select", "name,productId", "--webhook", served.url
    )
    assert code == 0
    assert list(ndjson(out)[0]) == ["id", "name", "product_id"]

    code, out, _ = run_cli(
        capsys,
        "list",
        "1",
        "2",
        "--select",
        "type",
        "--with-download-url",
        "--webhook",
        served.url,
    )
    assert code == 0
    rows = ndjson(out)
    # Several products: each line says whose image it is, even when select leaves it out.
    assert list(rows[0]) == ["id", "product_id", "type", "download_url"]
    assert rows[0]["download_url"].startswith(str(served.portal.origin))

    code, out, _ = run_cli(capsys, "list", "1", "--with-download-url", "--webhook", served.url)
    assert code == 0
    assert "download_url" in ndjson(out)[0]


@pytest.mark.parametrize(
    ("select", "message"),
    [("downloadUrl", "--with-download-url"), ("color", "not a field of ProductImage")],
)
def test_list_bad_select_is_a_usage_error(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], select: str, message: str
) -> None:
    code, out, err = run_cli(capsys, "list", "1", "--select", select, "--webhook", served.url)
    assert code == 2
    assert out == ""
    assert message in err
    assert served.portal.counters.requests == 0


def test_get_prints_one_object(served: ThreadPortal, capsys: pytest.CaptureFixture[str]) -> None:
    image = served.portal.catalog.images(3)[1]
    code, out, _ = run_cli(capsys, "get", "3", str(image.id), "--webhook", served.url)
    assert code == 0
    row = json.loads(out)
    assert (row["id"], row["name"], row["product_id"]) == (image.id, image.name, 3)
    assert "download_url" not in row


def test_get_missing_image_is_one_error_line(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "get", "1", "999", "--webhook", served.url)
    assert (code, out) == (1, "")
    assert_one_error_line(err, served.portal.webhook_code)


def test_fields_is_keyed_as_list_prints_with_the_wire_name(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "fields", "--webhook", served.url)
    assert code == 0
    fields = json.loads(out)
    assert fields["product_id"] == {
        "wire_name": "productId",
        "type": "string",
        "is_required": True,
        "is_read_only": False,
        "is_immutable": False,
    }
    assert {"id", "name", "type", "create_time", "download_url", "detail_url"} <= set(fields)


# --- add, delete ------------------------------------------------------------------------


def test_add_and_delete(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    picture = tmp_path / "new.png"
    picture.write_bytes(png(b"one"))
    code, out, _ = run_cli(capsys, "add", "4", str(picture), "--webhook", served.url)
    assert code == 0
    added = json.loads(out)
    assert (added["name"], added["product_id"], added["type"]) == ("new.png", 4, "MORE_PHOTO")
    stored = served.call(served.portal.catalog.images, 4)
    assert stored[-1].content == png(b"one")

    code, out, _ = run_cli(
        capsys,
        "add",
        "4",
        str(picture),
        "--name",
        "cover.png",
        "--type",
        "DETAIL_PICTURE",
        "--with-download-url",
        "--webhook",
        served.url,
    )
    assert code == 0
    cover = json.loads(out)
    assert (cover["name"], cover["type"]) == ("cover.png", "DETAIL_PICTURE")
    assert "download_url" in cover

    code, out, _ = run_cli(capsys, "delete", "4", str(added["id"]), "--webhook", served.url)
    assert code == 0
    assert json.loads(out) == {"id": added["id"], "product_id": 4, "deleted": True}
    ids = [image.id for image in served.call(served.portal.catalog.images, 4)]
    assert added["id"] not in ids
    assert cover["id"] in ids


def test_add_refuses_bad_files_before_any_request(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    code, _, err = run_cli(capsys, "add", "1", str(text), "--webhook", served.url)
    assert code == 1
    assert "not a JPEG, PNG" in assert_one_error_line(err)

    code, _, err = run_cli(capsys, "add", "1", str(tmp_path / "nope.png"), "--webhook", served.url)
    assert code == 1
    assert "no such file" in assert_one_error_line(err)
    assert served.portal.counters.requests == 0


def test_access_denied_is_one_error_line(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    served.call(served.portal.catalog.deny_write, 2)
    picture = tmp_path / "new.png"
    picture.write_bytes(png())
    code, _, err = run_cli(capsys, "add", "2", str(picture), "--webhook", served.url)
    assert code == 1
    assert_one_error_line(err, served.portal.webhook_code)


# --- the portal and its errors ------------------------------------------------------------


def test_bad_webhook_code_is_an_auth_error_without_the_code(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = str(served.portal.origin / "rest/1/wrongsecretcode/")
    code, out, err = run_cli(capsys, "list", "1", "--webhook", wrong)
    assert (code, out) == (1, "")
    line = assert_one_error_line(err, "wrongsecretcode", "/rest/1/")
    assert "INVALID_CREDENTIALS" in line or "NO_AUTH_FOUND" in line


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        ("http://portal.example.com/rest/1/topsecret/", "plain http"),
        ("https://portal.example.com/topsecret/", "a webhook URL looks like"),
        ("ftp://portal.example.com/rest/1/topsecret/", "absolute http(s) URL"),
    ],
)
def test_malformed_webhooks_are_one_error_line(
    capsys: pytest.CaptureFixture[str], webhook: str, message: str
) -> None:
    code, _, err = run_cli(capsys, "fields", "--webhook", webhook)
    assert code == 1
    assert message in assert_one_error_line(err, "topsecret")


def test_webhook_from_the_environment(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITRIX_WEBHOOK_URL", served.url)
    code, out, _ = run_cli(capsys, "list", "1")
    assert code == 0
    assert len(ndjson(out)) == 3


@pytest.mark.usefixtures("quick_retries")
def test_unreachable_portal_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "fields", "--webhook", "http://127.0.0.1:9/rest/1/secret99/")
    assert code == 1
    assert "cannot connect" in assert_one_error_line(err, "secret99")


@pytest.mark.usefixtures("quick_retries")
def test_rate_limited_after_the_retry_budget(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    served.call(
        served.portal.inject,
        "error",
        times=6,
        status=503,
        body={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
    )
    code, _, err = run_cli(capsys, "fields", "--rate", "100", "--webhook", served.url)
    assert code == 1
    assert "QUERY_LIMIT_EXCEEDED" in assert_one_error_line(err, served.portal.webhook_code)


def test_no_portal_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "fields")
    assert code == 2
    assert "no portal" in err


def test_incomplete_oauth_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITRIX_CLIENT_ENDPOINT", "https://portal.example.com/rest/")
    monkeypatch.setenv("BITRIX_ACCESS_TOKEN", "tok")
    code, _, err = run_cli(capsys, "fields")
    assert code == 2
    assert "BITRIX_REFRESH_TOKEN, BITRIX_CLIENT_ID, BITRIX_CLIENT_SECRET" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "0"],
        ["list", "abc"],
        ["get", "1"],
        ["add", "1", "x.png", "--type", "BANNER"],
        ["mirror", "dest"],
        ["mirror", "dest", "--product", "1", "--iblock", "14"],
        ["list", "1", "--rate", "fast"],
        ["list", "1", "--rate", "inf"],
        ["list", "1", "--burst", "0"],
        ["mirror", "dest", "--demo", "--webhook", "https://portal.example.com/rest/1/c/"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "usage:" in err or "error:" in err


def test_rate_options_before_and_after_the_command(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bx.RateLimit] = []
    original = Portal.client

    def spy(self: Portal, rate_limit: bx.RateLimit) -> bx.BitrixClient:
        seen.append(rate_limit)
        return original(self, rate_limit)

    monkeypatch.setattr(Portal, "client", spy)
    assert (
        run_cli(capsys, "--rate", "5", "fields", "--burst", "250", "--webhook", served.url)[0] == 0
    )
    assert run_cli(capsys, "--rate", "5", "fields", "--rate", "3", "--webhook", served.url)[0] == 0
    assert run_cli(capsys, "fields", "--webhook", served.url)[0] == 0
    assert [(r.rate, r.burst) for r in seen] == [(5.0, 250), (3.0, 50), (2.0, 50)]


# --- OAuth ----------------------------------------------------------------------------------


def test_oauth_refresh_is_saved_to_the_token_file(
    served: ThreadPortal,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    portal = served.portal
    oauth_env(monkeypatch, portal)
    assert run_cli(capsys, "list", "1")[0] == 0  # the tokens of the environment work

    served.call(portal.expire_access_token)
    tokens = tmp_path / "tokens.json"
    code, out, err = run_cli(capsys, "list", "1", "--token-file", str(tokens))
    assert (code, err) == (0, "")
    assert len(ndjson(out)) == 3
    saved = json.loads(tokens.read_text())
    assert saved["access_token"] == portal.access_token
    assert saved["refresh_token"] == portal.refresh_token
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"

    # The environment's tokens are dead now; the file's are read instead.
    code, out, _ = run_cli(capsys, "get", "1", "1", "--token-file", str(tokens))
    assert code == 0
    assert json.loads(out)["id"] == 1
    assert portal.counters.refreshes == 1


def test_oauth_refresh_without_a_token_file_warns(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    oauth_env(monkeypatch, served.portal)
    served.call(served.portal.expire_access_token)
    code, _, err = run_cli(capsys, "fields")
    assert code == 0
    assert "--token-file" in err
    assert served.portal.refresh_token not in err


def test_oauth_failed_refresh_is_one_error_line(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = served.portal
    oauth_env(monkeypatch, portal)
    served.call(portal.expire_access_token)
    portal.reject_refresh = True
    code, _, err = run_cli(capsys, "fields")
    assert code == 1
    assert_one_error_line(err, portal.access_token, portal.refresh_token, portal.client_secret)


def test_a_broken_token_file_is_an_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"access_token": 1}')
    code, _, err = run_cli(capsys, "fields", "--token-file", str(tokens))
    assert code == 1
    assert "not a token file" in assert_one_error_line(err)

    tokens.write_text(
        json.dumps(
            {
                "access_token": 1,
                "refresh_token": "r",
                "client_endpoint": "https://portal.example.com/rest/",
                "expires_at": "2030-01-01T00:00:00+00:00",
            }
        )
    )
    assert run_cli(capsys, "fields", "--token-file", str(tokens))[0] == 1


# --- mirror ---------------------------------------------------------------------------------


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        # The manifest (and its WAL files) is the tool's, not an image.
        if path.is_file() and not path.name.startswith(".bitrix-images.sqlite")
    }


def expected_files(portal: FakePortal, product_ids: list[int]) -> dict[str, bytes]:
    """What a mirror of these products must hold: DEST/<product>/<name>, twins id-prefixed."""
    expected: dict[str, bytes] = {}
    for product_id in product_ids:
        taken: set[str] = set()
        for image in portal.catalog.images(product_id):
            name = Path(image.name).name
            while name.casefold() in taken:
                name = f"{image.id}-{name}"
            taken.add(name.casefold())
            expected[f"{product_id}/{name}"] = image.content
    return expected


def test_mirror_products_then_skip_them(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    code, out, err = run_cli(
        capsys, "mirror", str(dest), "--product", "2", "--product", "4", "--webhook", served.url
    )
    assert (code, err) == (0, "")
    assert files_of(dest) == expected_files(served.portal, [2, 4])
    assert out.startswith("2 products, 6 images (6 downloaded, 0 skipped), ")
    assert out.count("\n") == 1
    # Through the public links, but for the one image cross-checked through REST.
    assert "; 5 via public links, 1 via REST; " in out
    assert served.portal.counters.by_method["download"] == 1
    assert served.portal.counters.files == 6

    code, out, _ = run_cli(
        capsys, "mirror", str(dest), "--product", "2", "--product", "4", "--webhook", served.url
    )
    assert code == 0
    assert out.startswith("2 products, 6 images (0 downloaded, 6 skipped), 0 bytes")
    assert served.portal.counters.by_method["download"] == 1
    assert served.portal.counters.files == 6


def test_mirror_twins_get_their_id_in_front(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    catalog = served.portal.catalog
    served.call(catalog.add_image, 1, name="photo-1.png", content=png(b"twin"))
    served.call(catalog.add_image, 1, name="PHOTO-1.png", content=png(b"triplet"))
    served.call(catalog.add_image, 1, name="../../escape.png", content=png(b"escape"))
    code, _, _ = run_cli(capsys, "mirror", "out", "--product", "1", "--webhook", served.url)
    assert code == 0
    files = files_of(tmp_path / "out")
    assert files == expected_files(served.portal, [1])
    twin, triplet, _ = catalog.images(1)[-3:]
    assert files[f"1/{twin.id}-photo-1.png"] == png(b"twin")
    assert files[f"1/{triplet.id}-PHOTO-1.png"] == png(b"triplet")
    assert files["1/escape.png"] == png(b"escape")


def test_mirror_products_file_streams_ids(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    listing = tmp_path / "ids.txt"
    listing.write_text("# the products to mirror\n\n3\n  5  # the last one\n")
    code, out, _ = run_cli(
        capsys, "mirror", "out", "--products-file", str(listing), "--webhook", served.url
    )
    assert code == 0
    assert out.startswith("2 products, 6 images (6 downloaded")
    assert files_of(tmp_path / "out") == expected_files(served.portal, [3, 5])


def test_mirror_products_file_from_stdin(
    served: ThreadPortal,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("1\n"))
    code, _, _ = run_cli(capsys, "mirror", "out", "--products-file", "-", "--webhook", served.url)
    assert code == 0
    assert files_of(tmp_path / "out") == expected_files(served.portal, [1])


@pytest.mark.parametrize("line", ["abc", "-3", "0", "1.5"])
def test_mirror_products_file_bad_line(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str
) -> None:
    listing = tmp_path / "ids.txt"
    listing.write_text(f"1\n{line}\n")
    code, _, err = run_cli(
        capsys, "mirror", "out", "--products-file", str(listing), "--webhook", served.url
    )
    assert code == 1
    assert f"line 2: not a product id: {line!r}" in assert_one_error_line(err)


def test_mirror_missing_products_file(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "mirror", "out", "--products-file", "missing.txt", "--webhook", served.url
    )
    assert code == 1
    assert "missing.txt" in assert_one_error_line(err)


def test_mirror_a_whole_catalog(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    served = ThreadPortal(products=60, images_per_product=1, page_mode="offset")
    try:
        code, out, _ = run_cli(
            capsys,
            *("mirror", "out", "--iblock", "14", "--concurrency", "8"),
            *("--rate", "100", "--burst", "100", "--webhook", served.url),
        )
        assert code == 0
        assert out.startswith("60 products, 60 images (60 downloaded")
        assert files_of(tmp_path / "out") == expected_files(served.portal, list(range(1, 61)))
        # One counted request for the bar's total, then the ids in one batch.
        assert served.portal.counters.by_method["catalog.product.list"] == 1
        assert served.portal.counters.commands["catalog.product.list"] == 2
    finally:
        served.close()


def test_mirror_skips_a_missing_product_and_goes_on(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run_cli(
        capsys,
        *("mirror", "out", "--product", "1", "--product", "999", "--product", "2"),
        *("--webhook", served.url),
    )
    assert code == 1
    assert "1 product could not be listed" in out
    assert "product 999 skipped: Product was not found" in err
    assert err.strip().splitlines()[-1].startswith("bitrix-images: error: 1 product could not")
    assert "Traceback" not in err
    assert files_of(tmp_path / "out") == expected_files(served.portal, [1, 2])


def test_mirror_into_a_file_is_an_error(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "taken").write_text("")
    code, _, err = run_cli(capsys, "mirror", "taken", "--product", "1", "--webhook", served.url)
    assert code == 1
    assert_one_error_line(err)


def test_mirror_goes_on_past_a_failed_image(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    served.call(served.portal.inject, "error", method="download", status=403, body=ACCESS_DENIED)
    code, out, err = run_cli(capsys, "mirror", "out", "--product", "1", "--webhook", served.url)
    assert code == 1
    assert ", 2 downloaded, 0 skipped, 1 failed)" in out.replace("(", ", ")
    warning, error = err.strip().splitlines()
    assert warning.startswith("bitrix-images: warning: product 1, image ")
    assert "ACCESS_DENIED" in warning
    assert error == ("bitrix-images: error: 1 image failed to download; run again to retry them")
    assert served.portal.webhook_code not in err
    assert len(files_of(tmp_path / "out")) == 2
    assert list((tmp_path / "out" / "1").glob(".*")) == []  # no partial file

    code, out, _ = run_cli(capsys, "mirror", "out", "--product", "1", "--webhook", served.url)
    assert code == 0
    assert "(1 downloaded, 2 skipped)" in out


def test_mirror_stops_on_an_auth_error(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    served.call(
        served.portal.inject, "error", method="download", status=401, body=INVALID_CREDENTIALS
    )
    code, out, err = run_cli(
        capsys, "mirror", "out", "--product", "1", "--concurrency", "1", "--webhook", served.url
    )
    assert code == 1
    # The summary still says what was done before the run stopped.
    assert out.startswith("1 product, ")
    assert "INVALID_CREDENTIALS" in assert_one_error_line(err, served.portal.webhook_code)


def test_mirror_shows_a_progress_bar_on_a_terminal(
    served: ThreadPortal,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    served.call(served.portal.inject, "error", method="download", status=403, body=ACCESS_DENIED)
    code, _, _ = run_cli(capsys, "mirror", "out", "--product", "1", "--webhook", served.url)
    assert code == 1
    shown = terminal.getvalue()
    # One product given: a total, a percentage; downloads and failures counted apart.
    assert "1/1 products" in shown
    assert "100%" in shown
    assert "2 downloaded" in shown
    assert "1 failed" in shown
    assert "bitrix-images: warning: product 1" in shown


def test_mirror_demo_writes_every_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "mirror", "--demo", "demo")
    assert (code, err) == (0, "")
    banner, summary = out.strip().splitlines()
    assert "demo portal on loopback (127.0.0.1:" in banner
    assert "309 products and 1000 images" in banner
    assert summary.startswith("309 products, 1000 images (1000 downloaded, 0 skipped)")

    sample = demo_portal()  # the same seeded catalog, not started
    expected = expected_files(sample, sample.catalog.product_ids())
    assert len(expected) == 1000
    assert files_of(tmp_path / "demo") == expected

    code, out, _ = run_cli(capsys, "mirror", "--demo", "demo")
    assert code == 0
    assert "(0 downloaded, 1000 skipped), 0 bytes" in out


# --- the error net --------------------------------------------------------------------------


def test_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "execute", interrupted)
    code, _, err = run_cli(capsys, "fields", "--webhook", "https://portal.example.com/rest/1/c/")
    assert code == 130
    assert err == "bitrix-images: interrupted\n"


def test_an_error_without_a_message_names_its_type(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: Any) -> int:
        raise PermissionError

    monkeypatch.setattr(app, "execute", failing)
    code, _, err = run_cli(capsys, "fields", "--webhook", "https://portal.example.com/rest/1/c/")
    assert code == 1
    assert err == "bitrix-images: error: PermissionError\n"


@pytest.mark.parametrize("has_fd", [True, False])
def test_a_closed_pipe_stops_quietly(
    served: ThreadPortal,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    has_fd: bool,
) -> None:
    read_end, write_end = os.pipe()

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

        def fileno(self) -> int:
            if has_fd:
                return write_end
            raise io.UnsupportedOperation("fileno")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    try:
        code = cli.main(["list", "1", "--webhook", served.url])
    finally:
        os.close(read_end)
        os.close(write_end)
    assert code == 1
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "cannot fetch https://portal.example.com/rest/1/abcdef/x.json now",
            "cannot fetch https://portal.example.com now",
        ),
        ("token abcdef123 refused", "token *** refused"),
        ("odd http://[::1 url", "odd <URL> url"),
        ("path-only file:///etc/passwd", "path-only <URL>"),
        (
            "a https://<portal>/rest/<user>/<code>/ form",
            "a https://<portal>/rest/<user>/<code>/ form",
        ),
        ("two\nlines", "two lines"),
    ],
)
def test_scrub(message: str, expected: str) -> None:
    assert scrub(message, ["abcdef123", "abcdef"]) == expected


def test_portal_secrets() -> None:
    portal = Portal(webhook="https://portal.example.com/rest/1/abcdef/")
    assert portal.secrets() == ["https://portal.example.com/rest/1/abcdef/", "abcdef"]
    oauth = Portal(
        oauth={
            "BITRIX_ACCESS_TOKEN": "access",
            "BITRIX_REFRESH_TOKEN": "refresh",
            "BITRIX_CLIENT_SECRET": "s",
        }
    )
    assert oauth.secrets() == ["access", "refresh"]
    assert "access" not in repr(oauth)


def test_python_dash_m(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["bitrix_images", "list", "1", "--webhook", served.url])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("bitrix_images", run_name="__main__", alter_sys=True)
    assert exit_.value.code == 0
    assert len(ndjson(capsys.readouterr().out)) == 3


# --- the mirror job, unit by unit ---------------------------------------------------------------


def test_file_ids() -> None:
    lines = ["1\n", "\n", "# comment\n", " 22 # trailing\n", "333"]
    assert list(_ids.file_ids(lines, "ids.txt")) == [1, 22, 333]


def test_file_ids_is_lazy() -> None:
    def lines() -> Iterator[str]:
        yield "1"
        raise AssertionError("read too far")

    assert next(_ids.file_ids(lines(), "ids")) == 1


class StubClient:
    """Just enough of BitrixClient for the mirror's edge cases."""

    def __init__(self, products: list[object], images: list[bx.ProductImage]) -> None:
        self.stats = bx.ClientStats()
        self.public_links = bx.LinkStats()
        self.origin = yarl.URL("https://stub.example")  # the mirror binds DEST to its host
        self._caller = types.SimpleNamespace(auth=None)
        self._products = products
        self.images = self
        self._images = images

    def paginate(self, method: str, params: dict[str, Any], *, key: str) -> Any:
        assert (method, key) == ("catalog.product.list", "products")
        assert params["filter"] == {"iblockId": 7}
        products = self._products

        class Pages:
            async def pages(self) -> AsyncIterator[bx.Page[object]]:
                yield bx.Page(tuple(products), total=len(products), next=None)

        return Pages()

    async def list_products(
        self, ids: AsyncIterator[int], *, select: object = None
    ) -> AsyncIterator[bx.ProductListing]:
        images = tuple(self._images)  # all of them answered for the first product
        async for product_id in ids:
            yield bx.ProductListing(product_id, images)
            images = ()


async def test_mirror_refuses_an_image_without_its_product(tmp_path: Path) -> None:
    client: Any = StubClient([], [bx.ProductImage(id=5, name="a.png")])
    with pytest.raises(bx.MalformedResponse, match="without its productId"):
        await bx.mirror(client, [1], tmp_path, warnings=sys.stderr)


@pytest.mark.parametrize("concurrency", [0, True, 1.5])
async def test_mirror_checks_concurrency(tmp_path: Path, concurrency: Any) -> None:
    client: Any = StubClient([], [])
    with pytest.raises(ValueError, match="concurrency"):
        await bx.mirror(client, [1], tmp_path, concurrency=concurrency, warnings=sys.stderr)


async def test_mirror_reads_async_ids(tmp_path: Path) -> None:
    async def ids() -> AsyncIterator[int]:
        yield 1
        yield 2

    client: Any = StubClient([], [])
    stats = await bx.mirror(client, ids(), tmp_path, warnings=sys.stderr)
    assert (stats.products, stats.images) == (2, 0)


@pytest.mark.parametrize(
    ("size", "shown"),
    [(512, "512 B"), (1500, "1.5 kB"), (2_500_000, "2.5 MB"), (3e9, "3.0 GB"), (4e12, "4.0 TB")],
)
def test_human_sizes(size: float, shown: str) -> None:
    assert human_size(size) == shown


# --- the real console script --------------------------------------------------------------


def script(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- our own interpreter and module
        [sys.executable, "-m", "bitrix_images", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_script_list_against_a_portal_process() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "bitrix_images.testing", "--port", "0", "--products", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        webhook = server.stdout.readline().strip()
        result = script("list", "1", "2", "--select", "name", env={"BITRIX_WEBHOOK_URL": webhook})
    finally:
        server.terminate()
        server.wait(timeout=10)
        assert server.stdout is not None
        server.stdout.close()
    assert (result.returncode, result.stderr) == (0, "")
    rows = ndjson(result.stdout)
    assert [(row["id"], row["name"]) for row in rows] == [
        (1, "photo-1.png"),
        (2, "photo-2.png"),
        (3, "photo-3.png"),
        (4, "photo-1.png"),
        (5, "photo-2.png"),
        (6, "photo-3.png"),
    ]


def test_script_mirror_twice_downloads_once(served: ThreadPortal, tmp_path: Path) -> None:
    argv = ("mirror", str(tmp_path / "out"), "--product", "1", "--product", "2")
    first = script(*argv, "--webhook", served.url)
    assert (first.returncode, first.stderr) == (0, "")  # stderr is no terminal: no bar
    # Public links, but for the one image cross-checked through REST.
    assert served.portal.counters.by_method["download"] == 1
    assert served.portal.counters.files == 6
    second = script(*argv, "--webhook", served.url)
    assert second.returncode == 0
    assert "(0 downloaded, 6 skipped)" in second.stdout
    assert served.portal.counters.by_method["download"] == 1
    assert served.portal.counters.files == 6
    assert files_of(tmp_path / "out") == expected_files(served.portal, [1, 2])


def test_script_bad_webhook(served: ThreadPortal) -> None:
    wrong = str(served.portal.origin / "rest/1/notthecode42/")
    result = script("list", "1", env={"BITRIX_WEBHOOK_URL": wrong})
    assert (result.returncode, result.stdout) == (1, "")
    assert_one_error_line(result.stderr, "notthecode42", "/rest/")


def test_importing_the_main_module_runs_nothing() -> None:
    import importlib

    module = importlib.import_module("bitrix_images.__main__")
    assert module.main is cli.main
