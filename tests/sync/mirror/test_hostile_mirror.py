"""A nightly-style mirror of a catalog salted with every hostile name and URL of issue 13:
it completes, with every good image on disk and each bad one named in a warning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_support import HostileProxy
from support import ThreadPortal, run_cli

from bitrix_images.testing._catalog import make_png

pytestmark = pytest.mark.usefixtures("cli_env")

HOSTILE_NAMES = {
    "nul": "nul\x00byte.png",
    "long": "a" * 300 + ".png",  # over NAME_MAX
    "cyrillic": "ж" * 121 + ".png",  # 246 bytes: legal, but no room for a temporary suffix
    "escapes": "\x1b]0;PWNED-TITLE\x07\x1b[2J.png",
    "newlines": "two\nlines\r.png",
    "bidi": "photo\u202egnp.exe",
    "slashes": "../../etc/passwd",
}


@pytest.fixture
def hostile() -> Iterator[tuple[ThreadPortal, HostileProxy, dict[str, int]]]:
    served = ThreadPortal(products=6, images_per_product=2)
    portal = served.portal
    ids: dict[str, int] = {}

    def salt() -> None:
        for index, (key, name) in enumerate(HOSTILE_NAMES.items()):
            product = 2 + index % 4
            stored = portal.catalog.add_image(
                product, name=name, content=make_png(90_000 + index, 7, None)
            )
            ids[key] = stored.id
        for key in ("foreign", "redirect"):
            stored = portal.catalog.add_image(
                4, name=f"{key}.png", content=make_png(91_000 + len(ids), 7, None)
            )
            ids[key] = stored.id

    served.call(salt)
    proxy = HostileProxy(portal, foreign=[ids["foreign"]], bad_redirect=[ids["redirect"]])
    served.run(proxy.start())
    yield served, proxy, ids
    served.run(proxy.close())
    served.close()


def files_under(root: Path) -> dict[Path, bytes]:
    return {
        path: path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def test_a_hostile_catalog_is_mirrored_whole(
    hostile: tuple[ThreadPortal, HostileProxy, dict[str, int]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    served, proxy, ids = hostile
    portal = served.portal
    products = portal.catalog.product_ids()
    # Through REST: the download links are what the proxy spoils (the public links are sound).
    argv = [
        *("mirror", "out", "--via", "rest"),
        *(f"--product={p}" for p in products),
        *("--webhook", proxy.webhook_url),
    ]
    code, out, err = run_cli(capsys, *argv)

    bad = {ids["foreign"], ids["redirect"]}
    good = [r for p in products for r in portal.catalog.images(p) if r.id not in bad]
    on_disk = files_under(tmp_path / "out")
    # Every good image is on disk, each in its own product's folder, inside DEST.
    assert sorted(on_disk.values()) == sorted(r.content for r in good)
    for record in good:
        folder = tmp_path / "out" / str(record.product_id)
        assert record.content in {data for path, data in on_disk.items() if path.parent == folder}
    assert not list((tmp_path / "out").rglob("*.part"))
    assert not (tmp_path / "etc").exists()

    # Each bad one is named in a warning, with its product; the run went on to the end.
    warnings = [line for line in err.splitlines() if ": warning: " in line]
    assert len(warnings) == len(bad), err
    for image_id in bad:
        assert sum(f"image {image_id}" in line for line in warnings) == 1, err
    assert "another origin" in err or "cdn.other.example" in err
    assert code == 1
    summary = out.strip().splitlines()[-1]
    assert f"{len(good)} downloaded" in summary
    assert "2 failed" in summary
    # Nothing the portal named reached the terminal raw.
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in err + out)
    assert "\u202e" not in err + out
    assert portal.webhook_code not in err + out


def test_a_hostile_catalog_in_json_lines_and_the_log_shows_no_secret(
    hostile: tuple[ThreadPortal, HostileProxy, dict[str, int]],
    capsys: pytest.CaptureFixture[str],
    secret_watch: Any,
) -> None:
    served, proxy, ids = hostile
    portal = served.portal
    argv = [
        *("mirror", "out", "--via", "rest", "--json", "-v", "--log-file", "run.log"),
        *(f"--product={p}" for p in portal.catalog.product_ids()),
        *("--webhook", proxy.webhook_url),
    ]
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    summary = json.loads(out)
    assert {failure["image_id"] for failure in summary["failures"]} == {
        ids["foreign"],
        ids["redirect"],
    }
    log = Path("run.log").read_text()
    records = [json.loads(line) for line in log.splitlines()]
    assert records[-1]["failures"] == summary["failures"]
    assert sum(line.startswith("+ ") for line in err.splitlines()) == summary["downloaded"]
    # -v lines (on standard error with --json) are printable whatever the portal named.
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in err)
    for text in (out, err, log):
        assert portal.webhook_code not in text
        assert "token=" not in text
        assert "/download/" not in text  # no signed link, not even its path
        assert '"download_url"' not in text
    secret_watch.check(out, err, log)
