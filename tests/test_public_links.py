"""Public file links (``via=``): the embedded portal over loopback, and a small file server of
the tests' own for what the portal does not do (a hanging answer, redirects, cookies)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from support import FAST_RETRY, PNG, UNLIMITED, partial_files, run_cli

import bitrix_images as bx
from bitrix_images._wire import public
from bitrix_images._wire.auth import WebhookAuth, check_portal_url
from bitrix_images._wire.public import LinkPolicy, LinkRefused
from bitrix_images.client import _Options
from bitrix_images.sync.manifest import MANIFEST_NAME, Entry, Manifest
from bitrix_images.testing import FakePortal, instant_retries

DOWNLOAD = "download"


def client_for(portal: FakePortal | str, policy: LinkPolicy | None = None, **options: Any) -> Any:
    url = portal if isinstance(portal, str) else str(portal.webhook_url)
    base = check_portal_url(url, allow_insecure=True, what="the webhook URL")
    settings: dict[str, Any] = {"retry": FAST_RETRY, "rate_limit": UNLIMITED, **options}
    return bx.BitrixClient(WebhookAuth(base), _Options(link_policy=policy, **settings))


def expected(portal: FakePortal, product_ids: list[int]) -> dict[str, bytes]:
    return {
        f"{pid}/{image.name}": image.content
        for pid in product_ids
        for image in portal.catalog.images(pid)
    }


def files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(MANIFEST_NAME)
    }


def vias(dest: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(dest / MANIFEST_NAME)) as db:
        return dict(db.execute("SELECT via, COUNT(*) FROM files GROUP BY via"))


async def mirror(
    portal: FakePortal, dest: Path, ids: list[int], policy: LinkPolicy | None = None, **options: Any
) -> tuple[bx.MirrorResult, str]:
    warnings = io.StringIO()
    async with client_for(portal, policy) as client:
        result = await bx.mirror(client, ids, dest, warnings=warnings, **options)
    return result, warnings.getvalue()


# --- the embedded portal ------------------------------------------------------------------------


async def test_public_links_only_list_through_rest(tmp_path: Path) -> None:
    async with FakePortal(products=4, images_per_product=3, rate=None, image_size=3000) as portal:
        result, _ = await mirror(portal, tmp_path, [1, 2, 3, 4], via="public")
        counters = portal.counters
        assert files_under(tmp_path) == expected(portal, [1, 2, 3, 4])
        assert counters.by_method[DOWNLOAD] == 0  # via=public never calls REST for a file
        assert counters.files == counters.files_by_status[200] == 12
        assert (result.via_public, result.via_rest, result.fallbacks) == (12, 0, ())
        assert vias(tmp_path) == {"public": 12}
        assert "12 via public links, 0 via REST" in result.summary()


async def test_auto_costs_the_listing_and_one_cross_checked_image(tmp_path: Path) -> None:
    async with FakePortal(products=10, images_per_product=3, rate=None) as portal:
        result, warned = await mirror(portal, tmp_path, list(range(1, 11)))
        counters = portal.counters
        assert files_under(tmp_path) == expected(portal, list(range(1, 11)))
        # The listing (one batch) and the one image fetched both ways.
        assert counters.by_method[DOWNLOAD] == 1
        assert counters.requests == 2
        assert counters.files == 30
        assert (result.via_public, result.via_rest) == (29, 1)
        assert result.requests == 2
        assert vias(tmp_path) == {"public": 29, "rest": 1}
        assert warned == ""
        # A second run fetches nothing: "already here" is unchanged.
        counters.reset()
        again, _ = await mirror(portal, tmp_path, list(range(1, 11)))
        assert (again.downloaded, again.skipped, counters.files) == (0, 30, 0)
        assert counters.by_method[DOWNLOAD] == 0


async def test_closed_upload_falls_back_and_says_so_once(tmp_path: Path) -> None:
    async with FakePortal(
        products=3, images_per_product=3, rate=None, public_files=False
    ) as portal:
        result, warned = await mirror(portal, tmp_path, [1, 2, 3])
        assert files_under(tmp_path) == expected(portal, [1, 2, 3])
        # The first three public links refused: the rest went straight to REST.
        assert portal.counters.files_by_status == {403: 3}
        assert portal.counters.by_method[DOWNLOAD] == 9
        assert (result.via_public, result.via_rest) == (0, 9)
        assert result.fallbacks == (("403", 3),)
        assert result.public_given_up is not None
        assert warned.count("public file links") == 1
        assert "0 via public links, 9 via REST (403: 3)" in result.summary()


async def test_closed_upload_under_public_fails_each_image_without_rest(tmp_path: Path) -> None:
    async with FakePortal(
        products=2, images_per_product=2, rate=None, public_files=False
    ) as portal:
        result, warned = await mirror(portal, tmp_path, [1, 2], via="public")
        assert (result.downloaded, result.failed) == (0, 4)
        assert portal.counters.by_method[DOWNLOAD] == 0
        assert warned.count("the public link did not give the image (403)") == 4
        assert files_under(tmp_path) == {}


async def test_mixed_answers_fall_back_per_image(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=10, rate=None, image_size=2048) as portal:
        # The first three answer well: the cross-check cannot meet three refusals in a row.
        ids = [image.id for image in portal.catalog.images(1)]
        portal.inject_file("forbidden", image_id=ids[3])
        portal.inject_file("forbidden", image_id=ids[4])
        portal.inject_file("not_found", image_id=ids[5])
        portal.inject_file("login_page", image_id=ids[6])
        portal.inject_file("cut_short", image_id=ids[7])
        portal.inject_file("busy", image_id=ids[8], times=1)  # Retry-After: retried, no fallback
        with instant_retries():
            result, warned = await mirror(portal, tmp_path, [1])
        assert files_under(tmp_path) == expected(portal, [1])
        assert dict(result.fallbacks) == {"403": 2, "404": 1, "html": 1, "cut short": 1}
        assert "(403: 2, 404: 1, cut short: 1, html: 1)" in result.summary()
        # Five fallbacks and the one cross-checked image, whichever image that was.
        assert portal.counters.by_method[DOWNLOAD] == 6
        assert (result.via_public, result.via_rest) == (4, 6)
        assert portal.counters.files_by_status[503] == 1
        assert result.public_given_up is None
        assert warned == ""


async def test_mixed_answers_under_public(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=4, rate=None) as portal:
        ids = [image.id for image in portal.catalog.images(1)]
        portal.inject_file("not_found", image_id=ids[0])
        portal.inject_file("login_page", image_id=ids[1])
        portal.inject_file("cut_short", image_id=ids[2])
        result, warned = await mirror(portal, tmp_path, [1], via="public")
        assert (result.downloaded, result.failed) == (1, 3)
        assert portal.counters.by_method[DOWNLOAD] == 0
        for reason in ("(404)", "(html)", "(cut short)"):
            assert reason in warned


async def test_bytes_that_differ_switch_the_client_to_rest(tmp_path: Path) -> None:
    async with FakePortal(products=3, images_per_product=2, rate=None) as portal:
        portal.inject_file("other_bytes")  # every public file: another valid PNG
        result, warned = await mirror(portal, tmp_path, [1, 2, 3])
        assert files_under(tmp_path) == expected(portal, [1, 2, 3])
        assert portal.counters.files == 1  # the cross-checked image only
        assert portal.counters.by_method[DOWNLOAD] == 6
        assert (result.via_public, result.via_rest) == (0, 6)
        assert result.public_given_up is not None
        assert "differ" in result.public_given_up
        assert warned.count("public file links") == 1


async def test_the_storage_origin(tmp_path: Path) -> None:
    async with FakePortal(
        products=2, images_per_product=2, rate=None, files_origin="127.0.0.1"
    ) as portal:
        # A test's storage host on loopback over http: allowed only by the policy.
        storage = LinkPolicy(allow_private=True, allow_http=True)
        result, _ = await mirror(portal, tmp_path / "a", [1, 2], storage, via="public")
        assert files_under(tmp_path / "a") == expected(portal, [1, 2])
        assert (result.via_public, portal.counters.files) == (4, 4)
        # The default policy refuses http on another host: auto falls back, public fails.
        portal.counters.reset()
        result, _ = await mirror(portal, tmp_path / "b", [1, 2])
        assert files_under(tmp_path / "b") == expected(portal, [1, 2])
        assert result.fallbacks == (("refused address", 4),)
        assert portal.counters.files == 0
        result, warned = await mirror(portal, tmp_path / "c", [1, 2], via="public")
        assert result.failed == 4
        assert "not https" in warned


async def test_storage_host_name_on_a_private_address_is_refused_at_connect(
    tmp_path: Path,
) -> None:
    async with FakePortal(
        products=1, images_per_product=2, rate=None, files_origin="localhost"
    ) as portal:
        # http allowed, private addresses not: "localhost" resolves to loopback, refused
        # when connecting, before a byte is sent.
        policy = LinkPolicy(allow_http=True)
        result, warned = await mirror(portal, tmp_path, [1], policy, via="public")
        assert result.failed == 2
        assert "non-global address" in warned
        assert portal.counters.files == 0


async def test_a_remote_portal_pointing_at_a_private_address(tmp_path: Path) -> None:
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        # The loopback portal treated as a remote one: its detailUrl on 127.0.0.1 is refused.
        remote = LinkPolicy(trust_portal=False, allow_http=True)
        result, warned = await mirror(portal, tmp_path / "a", [1, 2], remote, via="public")
        assert result.failed == 4
        assert "non-global address (127.0.0.1)" in warned
        assert portal.counters.files == 0
        result, _ = await mirror(portal, tmp_path / "b", [1, 2], remote)
        assert files_under(tmp_path / "b") == expected(portal, [1, 2])
        assert result.fallbacks == (("refused address", 4),)
        assert portal.counters.files == 0


async def test_dry_run_fetches_no_file(tmp_path: Path) -> None:
    async with FakePortal(products=3, images_per_product=2, rate=None) as portal:
        result, _ = await mirror(portal, tmp_path, [1, 2, 3], dry_run=True)
        assert result.downloaded == 6
        assert (portal.counters.files, portal.counters.by_method[DOWNLOAD]) == (0, 0)
        assert "via public links" not in result.summary()


async def test_download_via_each_route(tmp_path: Path) -> None:
    async with FakePortal(products=1, images_per_product=1, rate=None) as portal:
        async with client_for(portal) as client:
            image = (await client.images.list(1).pages().__anext__()).items[0]
            content = portal.catalog.images(1)[0].content
            for via, files, rest in (("rest", 0, 1), ("public", 1, 1), ("auto", 2, 2)):
                path = await client.images.download(image, tmp_path, via=via)
                assert path.read_bytes() == content
                assert (portal.counters.files, portal.counters.by_method[DOWNLOAD]) == (files, rest)
            # Checked already: auto fetches the public link only.
            await client.images.download(image, tmp_path)
            assert portal.counters.files == 3
            assert client.public_links.public == 2
            with pytest.raises(ValueError, match="via must be one of"):
                await client.images.download(image, tmp_path, via="ftp")
            no_link = bx.ProductImage(id=image.id, download_url=str(image.download_url))
            with pytest.raises(ValueError, match="detail_url"):
                await client.images.download(no_link, tmp_path, via="public")
            # No public link under auto: REST, counted as a fallback.
            await client.images.download(no_link, tmp_path)
            assert client.public_links.fallbacks == {"no link": 1}
        assert partial_files(tmp_path) == []
    with pytest.raises(TypeError, match="link_policy"):
        client_for("http://127.0.0.1:1/rest/1/abc/", policy="x")  # type: ignore[arg-type]


# --- a file server of the tests' own ------------------------------------------------------------


class FileServer:
    """Public files on loopback: one that hangs half-way, redirects, and what each GET carried."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.origin = yarl.URL()

    async def __aenter__(self) -> FileServer:
        app = web.Application()
        app.router.add_get("/upload/ok.png", self.ok)
        app.router.add_get("/upload/hang.png", self.hang)
        app.router.add_get("/upload/hop/{n}", self.hop)
        app.router.add_get("/upload/nowhere", self.nowhere)
        app.router.add_get("/upload/malformed", self.malformed)
        app.router.add_get("/upload/chunked.png", self.chunked)
        app.router.add_get("/upload/tiny.png", self.tiny)
        app.router.add_post("/rest/1/secretcode/scope.json", self.scope)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.origin = yarl.URL.build(scheme="http", host="127.0.0.1", port=port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def webhook(self) -> str:
        return str(self.origin / "rest/1/secretcode/")

    def image(self, path: str) -> bx.ProductImage:
        return bx.ProductImage(id=1, name="a.png", product_id=1, detail_url=self.origin / path)

    def note(self, request: web.Request) -> None:
        self.seen.append(
            {"path": request.path, "query": dict(request.query), "headers": dict(request.headers)}
        )

    async def ok(self, request: web.Request) -> web.Response:
        self.note(request)
        return web.Response(body=PNG, content_type="image/png")

    async def nowhere(self, request: web.Request) -> web.Response:
        return web.Response(status=302)

    async def malformed(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://[::1"})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(4):
            await response.write(PNG)
        await response.write_eof()
        return response

    async def tiny(self, request: web.Request) -> web.Response:
        return web.Response(body=b"abc", content_type="image/png")

    async def scope(self, request: web.Request) -> web.Response:
        self.note(request)
        return web.json_response({"result": ["catalog"]})

    async def hang(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(PNG + bytes(5000))
        self.started.set()
        await self.release.wait()  # past the client's cancellation: until the server closes
        return response

    async def hop(self, request: web.Request) -> web.StreamResponse:
        self.note(request)
        n = int(request.match_info["n"])
        if n == 0:
            raise web.HTTPFound("/upload/ok.png")
        if n == 99:
            raise web.HTTPFound("http://10.0.0.1/upload/x.png")
        raise web.HTTPFound(f"/upload/hop/{n - 1}")


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with FileServer() as server:
        yield server


async def test_no_credentials_reach_a_public_link(files: FileServer, tmp_path: Path) -> None:
    # unsafe: the jar's cookies for an address literal (the loopback server).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        # A borrowed session holding the portal's session cookie: REST carries it, the
        # public link must not.
        session.cookie_jar.update_cookies({"PHPSESSID": "cookie-secret"}, files.origin)
        async with client_for(files.webhook, session=session) as client:
            await client.call("scope")
            await client.images.download(files.image("upload/ok.png"), tmp_path, via="public")
    rest, fetched = files.seen
    assert "cookie-secret" in rest["headers"].get("Cookie", "")
    assert fetched["path"] == "/upload/ok.png"
    assert fetched["query"] == {}
    assert "Cookie" not in fetched["headers"]
    assert "Authorization" not in fetched["headers"]
    assert "secretcode" not in str(fetched)
    assert (tmp_path / "a.png").read_bytes() == PNG


async def test_cancelled_mid_public_fetch_leaves_no_file(files: FileServer, tmp_path: Path) -> None:
    async with client_for(files.webhook) as client:
        task = asyncio.ensure_future(
            client.images.download(files.image("upload/hang.png"), tmp_path, via="public")
        )
        await asyncio.wait_for(files.started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert list(tmp_path.iterdir()) == []


async def test_redirects_are_followed_and_checked_again(files: FileServer, tmp_path: Path) -> None:
    async with client_for(files.webhook) as client:
        path = await client.images.download(files.image("upload/hop/2"), tmp_path, via="public")
        assert path.read_bytes() == PNG  # three redirects: the most followed
        with pytest.raises(bx.MalformedResponse, match="too many redirects"):
            await client.images.download(files.image("upload/hop/3"), tmp_path, via="public")
        # A redirect to a private address elsewhere: refused before connecting.
        with pytest.raises(LinkRefused, match="not https"):
            await client.images.download(files.image("upload/hop/99"), tmp_path, via="public")
    assert partial_files(tmp_path) == []


async def test_answers_that_do_not_count(files: FileServer, tmp_path: Path) -> None:
    async with client_for(files.webhook, LinkPolicy(max_file_bytes=len(PNG) * 4)) as client:
        # A clean end without a Content-Length counts when the image check passes.
        path = await client.images.download(
            files.image("upload/chunked.png"), tmp_path, via="public"
        )
        assert path.read_bytes() == PNG * 4
        for link, reason in (
            ("upload/nowhere", "redirect without a location"),
            ("upload/malformed", "malformed redirect"),
            ("upload/tiny.png", "not an image"),
        ):
            with pytest.raises(bx.MalformedResponse, match=reason):
                await client.images.download(files.image(link), tmp_path, via="public")
    async with client_for(files.webhook, LinkPolicy(max_file_bytes=20)) as client:
        for link in ("upload/ok.png", "upload/chunked.png"):  # with a length, and without
            with pytest.raises(bx.MalformedResponse, match="too large"):
                await client.images.download(files.image(link), tmp_path, via="public")
        # Nothing to fall back to: no download_url, or one on another origin.
        with pytest.raises(ValueError, match="no download_url"):
            await client.images.download(files.image("upload/ok.png"), tmp_path, via="rest")
        elsewhere = bx.ProductImage(
            id=1, name="a.png", download_url="https://elsewhere.example/rest/download.json"
        )
        with pytest.raises(ValueError, match="outside the portal's origin"):
            await client.images.download(elsewhere, tmp_path)
    with pytest.raises(RuntimeError, match="closed"):
        await client.images.download(files.image("upload/ok.png"), tmp_path, via="public")
    assert partial_files(tmp_path) == []


async def test_no_answer_and_timeouts_are_retried_then_fail(
    files: FileServer, tmp_path: Path
) -> None:
    async with client_for(files.webhook, timeout=0.2) as client:
        # The answer never ends: each attempt times out, then the image fails.
        with pytest.raises(bx.TransportError, match="timed out") as info:
            await client.images.download(files.image("upload/hang.png"), tmp_path, via="public")
        assert info.value.attempts == FAST_RETRY.max_attempts
        assert client.stats.retries == FAST_RETRY.max_attempts - 1
        assert client.stats.requests == 0  # not one REST request
    await files.__aexit__()  # nothing listens there any more
    async with client_for(files.webhook) as client:
        with pytest.raises(bx.TransportError, match="no connection"):
            await client.images.download(files.image("upload/ok.png"), tmp_path, via="public")
    assert list(tmp_path.iterdir()) == []


async def test_a_big_file_spills_to_disk_and_is_cross_checked(tmp_path: Path) -> None:
    size = 5 * 2**20  # past the spool's 4 MiB in memory
    async with FakePortal(products=1, images_per_product=2, rate=None, image_size=size) as portal:
        result, _ = await mirror(portal, tmp_path, [1])
        assert files_under(tmp_path) == expected(portal, [1])
        assert (result.via_public, result.via_rest) == (1, 1)


async def test_host_names_are_resolved_through_the_policy(tmp_path: Path) -> None:
    # The portal's own name is trusted at whatever address it resolves to (loopback here).
    async with FakePortal(products=1, images_per_product=2, rate=None, host="localhost") as portal:
        result, _ = await mirror(portal, tmp_path / "a", [1], via="public")
        assert (result.via_public, portal.counters.files) == (2, 2)
    # Another host's name is resolved and checked: allowed here by the policy.
    async with FakePortal(
        products=1, images_per_product=2, rate=None, host="localhost", files_origin="localhost"
    ) as portal:
        policy = LinkPolicy(allow_private=True, allow_http=True)
        result, _ = await mirror(portal, tmp_path / "b", [1], policy, via="public")
        assert (result.via_public, portal.counters.files) == (2, 2)


# --- the command line -----------------------------------------------------------------------


@pytest.mark.usefixtures("cli_env")
@pytest.mark.served(products=2, images_per_product=2)
def test_cli_via(served: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ("mirror", "out", "--product", "1", "--product", "2", "--webhook", served.url)
    code, out, _ = run_cli(capsys, *base, "--via", "public")
    assert code == 0
    assert "4 via public links, 0 via REST" in out
    code, out, _ = run_cli(capsys, *base, "--via", "rest")
    assert code == 0
    assert "0 downloaded, 4 skipped" in out
    code, _, err = run_cli(capsys, *base, "--via", "ftp")
    assert code == 2
    assert "invalid choice: 'ftp'" in err
    code, out, _ = run_cli(capsys, "mirror", "--help")
    assert "--via {auto,public,rest}" in out


# --- the manifest -------------------------------------------------------------------------


async def test_an_old_manifest_gains_the_via_column(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / MANIFEST_NAME)) as db:
        db.executescript(
            "CREATE TABLE files (image_id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL,"
            " path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
            " recorded REAL NOT NULL);"
            "INSERT INTO files VALUES (1, 1, '1/a.png', 3, 'aa', 1.0);"
        )
    manifest = await Manifest.open(tmp_path)
    try:
        (old,) = await manifest.entries()
        assert (old.path, old.via) == ("1/a.png", None)
        await manifest.record([Entry(1, 2, "1/b.png", 3, "bb", via="public")])
        assert [e.via for e in await manifest.entries()] == [None, "public"]
    finally:
        await manifest.close()
    manifest = await Manifest.open(tmp_path)  # already migrated: opened as is
    await manifest.close()
    with contextlib.closing(sqlite3.connect(tmp_path / MANIFEST_NAME)) as db:
        # Version 2 (the portal binding, each row's generation) came with it.
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
        assert {"via", "generation"} <= columns


# --- the pure rules -------------------------------------------------------------------------


def test_judge_answer() -> None:
    judge = public.judge_answer
    assert judge(200, "image/png", PNG, 32, 32) is None
    assert judge(200, "application/octet-stream", PNG, 32, None) is None
    assert judge(403, "text/html", b"<html>", 6, 6) == "403"
    assert judge(200, "text/html; charset=UTF-8", b"<!DOCTYPE", 9, 9) == "html"
    assert judge(200, "image/png", b"  <html>", 8, 8) == "html"
    assert judge(200, "image/png", PNG, 20, 32) == "cut short"
    assert judge(200, "image/png", b"GIF00a" + bytes(10), 16, 16) == "not an image"


def test_check_link() -> None:
    origin = yarl.URL("https://portal.example")
    strict = LinkPolicy()
    assert public.check_link(yarl.URL("https://portal.example/upload/a.png"), origin, strict)
    assert not public.check_link(yarl.URL("https://cdn.example/a.png"), origin, strict)
    assert not public.check_link(yarl.URL("https://8.8.8.8/a.png"), origin, strict)
    for bad, why in (
        ("/upload/a.png", "not an http"),
        ("ftp://cdn.example/a.png", "not an http"),
        ("http://cdn.example/a.png", "not https"),
        ("https://10.1.2.3/a.png", "non-global"),
        ("https://[::1]/a.png", "non-global"),
        ("https://169.254.169.254/latest", "non-global"),
    ):
        with pytest.raises(LinkRefused, match=why):
            public.check_link(yarl.URL(bad), origin, strict)
    remote = LinkPolicy(trust_portal=False)
    with pytest.raises(LinkRefused):
        public.check_link(
            yarl.URL("https://127.0.0.1/a.png"), yarl.URL("https://127.0.0.1"), remote
        )


def test_address_allowed() -> None:
    strict = LinkPolicy()
    assert public.address_allowed("93.184.216.34", strict)
    assert public.address_allowed("2606:2800:220:1::1", strict)
    for private in (
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "::1",
        "fe80::1%eth0",
        "fd00::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",  # noqa: S104 -- an address checked, nothing bound
        "224.0.0.1",
        "not an address",
    ):
        assert not public.address_allowed(private, strict), private
    assert public.address_allowed("127.0.0.1", LinkPolicy(allow_private=True))


def test_retry_after_and_policy() -> None:
    assert public.retry_after("2", 60.0) == 2.0
    assert public.retry_after("600", 60.0) == 60.0
    for value in (None, "", "Wed, 21 Oct 2026 07:28:00 GMT", "-1", "nan", "inf"):
        assert public.retry_after(value, 60.0) is None
    with pytest.raises(ValueError, match="max_file_bytes"):
        LinkPolicy(max_file_bytes=0)
