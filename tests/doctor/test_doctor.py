"""``client.doctor()``: each check against the embedded portal's options, over loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
from aiohttp import web
from support import ThreadPortal, oauth_client, run_cli, webhook_client

import bitrix_images as bx
from bitrix_images import _doctor
from bitrix_images._doctor import checks
from bitrix_images._doctor.checks import _image_ids
from bitrix_images.testing import FakePortal

NAMES = (
    "connect",
    "auth",
    "scope",
    "methods",
    "read",
    "clock",
    "page_mode",
    "operating_counters",
    "public_files",
    "batch",
)
# A self-signed certificate for 127.0.0.1, which no client trusts.
OPENSSL_CERT = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1")
OPENSSL_CERT += ("-subj", "/CN=localhost")
LIST = "catalog.productImage.list"
ADD = "catalog.productImage.add"
ACCESS_DENIED = {"error": "ACCESS_DENIED", "error_description": "Access denied."}


def statuses(report: bx.PortalReport) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


async def doctor(portal: FakePortal, **options: object) -> bx.PortalReport:
    async with webhook_client(portal) as client:
        return await client.doctor(**options)  # type: ignore[arg-type]


def writes(portal: FakePortal) -> int:
    methods = portal.counters.by_method
    commands = portal.counters.commands
    return sum(
        table[name]
        for table in (methods, commands)
        for name in ("catalog.productimage.add", "catalog.productimage.delete")
    )


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def only(report: bx.PortalReport, **expected: str) -> None:
    """Every check ok, but the *expected* ones."""
    found = statuses(report)
    for name, status in found.items():
        assert status == expected.get(name, "ok"), (
            name,
            report.check(name),
        )


# --- a healthy portal ------------------------------------------------------------------------


async def test_a_healthy_portal_passes_every_check_and_writes_nothing(secret_watch: object) -> None:
    async with FakePortal() as portal, webhook_client(portal) as client:
        before = portal.catalog.image_count()
        report = await client.doctor()
        assert isinstance(report, bx.PortalReport)
        assert tuple(c.name for c in report.checks) == NAMES
        assert report.ok
        only(report)
        assert report.check("read").detail == "product 1 of catalog 14: 3 image(s) listed"
        # One HEAD for connect, then 13 REST requests: scope, 5 method.get, catalog.catalog.list,
        # catalog.product.list, one list, server.time, the start=1 list, one REST download
        # (public_files), one batch; and one public file outside REST.
        assert client.stats.requests == 14
        assert portal.counters.requests == 14
        assert sum(portal.counters.by_method.values()) == 13  # the HEAD is in no method
        assert portal.counters.files == 1
        assert writes(portal) == 0
        assert portal.catalog.image_count() == before
        secret = portal.webhook_code
        assert all(secret not in f"{c!r}" for c in report.checks)
        with pytest.raises(KeyError):
            report.check("write")


async def test_check_and_report_are_frozen_printable_values() -> None:
    check = bx.Check("read", "warn", "a\nb\x1b[2J  c", "do\tthis")
    assert (check.detail, check.hint) == ("a b\\x1b[2J c", "do this")
    assert bx.Check("x", "ok", "done").hint is None
    with pytest.raises(ValueError, match="status"):
        bx.Check("x", "bad", "done")  # type: ignore[arg-type]
    long = bx.Check("x", "ok", "y" * 1000)
    assert len(long.detail) == 300
    report = bx.PortalReport.of((bx.Check("clock", "warn", "late"), check))
    assert report.ok  # warnings never make it false
    assert not bx.PortalReport.of((bx.Check("batch", "fail", "no"),)).ok
    with pytest.raises(AttributeError):
        report.ok = False  # type: ignore[misc]


async def test_write_check_is_checked_before_any_request() -> None:
    async with FakePortal() as portal, webhook_client(portal) as client:
        for bad in (0, -1, True, "3"):
            with pytest.raises((ValueError, TypeError)):
                await client.doctor(write_check=bad)  # type: ignore[arg-type]
        assert client.stats.requests == 0


# --- connect and auth ------------------------------------------------------------------------


async def test_a_dead_portal_fails_connect_and_skips_the_rest() -> None:
    url = f"http://127.0.0.1:{free_port()}/rest/1/0123456789abcdef/"
    async with bx.BitrixClient.from_webhook(url) as client:  # the production retry policy
        report = await client.doctor(write_check=5)
        assert not report.ok
        connect = report.check("connect")
        assert connect.status == "fail"
        assert connect.detail.startswith("TCP: cannot connect to 127.0.0.1:")
        assert connect.hint is not None
        assert [c.status for c in report.checks[1:]] == ["skip"] * (len(NAMES))
        assert report.check("auth").detail == "not run: connect failed"
        assert report.check("read").detail == "not run: scope was not run"
        assert client.stats.requests == 1  # one attempt, never a retry storm


async def test_https_to_a_plain_http_portal_names_tls() -> None:
    async with FakePortal() as portal:
        url = portal.webhook_url.with_scheme("https")
        async with bx.BitrixClient.from_webhook(url) as client:
            report = await client.doctor()
        connect = report.check("connect")
        assert connect.status == "fail"
        assert connect.detail.startswith("TLS:"), connect


async def test_a_bad_webhook_fails_auth() -> None:
    async with FakePortal() as portal:
        url = portal.origin / "rest/1/wrongsecretcode/"
        async with bx.BitrixClient.from_webhook(url) as client:
            report = await client.doctor()
        assert all("wrongsecretcode" not in repr(c) for c in report.checks)
        assert not report.ok
        auth = report.check("auth")
        assert auth.status == "fail"
        assert "INVALID_CREDENTIALS" in auth.detail
        assert "webhook" in (auth.hint or "")
        assert statuses(report)["connect"] == "ok"
        assert {c.status for c in report.checks[2:]} == {"skip"}


async def test_an_oauth_pair_is_refreshed_only_when_expired(secret_watch: object) -> None:
    saved: list[bx.OAuthTokens] = []

    async def save(tokens: bx.OAuthTokens) -> None:
        saved.append(tokens)

    async with FakePortal() as portal:
        async with oauth_client(portal, on_token_refresh=save) as client:
            report = await client.doctor()
            assert report.ok
            assert report.check("auth").detail == "the OAuth access token was accepted"
            assert (client.stats.refreshes, saved) == (0, [])
            portal.expire_access_token()
            report = await client.doctor()
            assert report.ok
            assert "refreshed" in report.check("auth").detail
            assert client.stats.refreshes == 1
            assert [t.access_token for t in saved] == [portal.access_token]
            assert all(portal.access_token not in repr(c) for c in report.checks)


# --- scope, methods, read --------------------------------------------------------------------


async def test_without_the_catalog_scope() -> None:
    async with FakePortal(scopes=("crm", "user")) as portal:
        report = await doctor(portal, write_check=1)
    assert not report.ok
    scope = report.check("scope")
    assert (scope.status, scope.detail) == (
        "fail",
        "the catalog scope is not granted (scopes: crm, user)",
    )
    assert "catalog scope" in (scope.hint or "")
    assert report.check("methods").status == "fail"
    assert "not available" in report.check("methods").detail
    found = statuses(report)
    assert (found["read"], found["page_mode"], found["write"]) == ("skip", "skip", "skip")
    assert (found["clock"], found["batch"]) == ("ok", "ok")


async def test_methods_skip_where_method_get_is_unknown() -> None:
    async with FakePortal() as portal:
        body = {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
        portal.inject("error", method="method.get", status=404, body=body)
        report = await doctor(portal)
    assert report.ok
    only(report, methods="skip")
    assert report.check("methods").detail == "the portal does not know method.get"


async def test_read_without_catalog_rights_fails_with_a_hint() -> None:
    async with FakePortal() as portal:
        portal.catalog.deny_read(1)
        report = await doctor(portal)
    assert not report.ok
    read = report.check("read")
    assert read.status == "fail"
    assert "200040300010" in read.detail
    assert "right" in (read.hint or "")
    assert statuses(report)["page_mode"] == "skip"


async def test_read_of_an_empty_catalog_warns() -> None:
    async with FakePortal(products=0) as portal:
        report = await doctor(portal)
    assert report.ok
    only(report, read="warn", page_mode="skip", public_files="skip")
    assert "no product" in report.check("read").detail


# --- public files ----------------------------------------------------------------------------


async def test_public_files_match_rest_on_a_default_portal() -> None:
    async with FakePortal() as portal, webhook_client(portal) as client:
        report = await client.doctor()
        assert portal.counters.files == 1  # the public link, fetched once
        assert client.public_links.public == client.public_links.rest == 0  # not a job's files
    only(report)
    found = report.check("public_files")
    assert found.detail.startswith("image 1 of product 1: the public link gives the same ")
    assert found.hint is None


@pytest.mark.parametrize(
    ("options", "inject", "detail"),
    [
        (
            {"public_files": False},
            None,
            "/upload/ is closed to visitors (the public link answered 403)",
        ),
        ({}, "login_page", "/upload/ is closed to visitors (the public link answered html)"),
        ({}, "cut_short", "the public link did not give the complete image (cut short)"),
        ({}, "other_bytes", "the public link gives "),
    ],
)
async def test_public_files_warn_when_closed_incomplete_or_different(
    options: dict[str, object], inject: str | None, detail: str
) -> None:
    async with FakePortal(**options) as portal:  # type: ignore[arg-type]
        if inject is not None:
            portal.inject_file(inject)
        # The portal's 2 requests/s: 14 requests stay within its burst of 50, no wait.
        async with webhook_client(portal, rate_limit=bx.RateLimit(rate=2.0)) as client:
            report = await client.doctor()
    assert report.ok  # a warning never changes the verdict
    only(report, public_files="warn")
    found = report.check("public_files")
    assert found.detail.startswith(f"image 1 of product 1: {detail}"), found
    if inject == "other_bytes":
        assert "differ from REST's" in found.detail
    # The client's own rate says what REST costs.
    assert "through REST, one request per file: at 2 requests/s, about 7,200 images an hour" in (
        found.hint or ""
    )


async def test_public_files_skip_without_an_image() -> None:
    async with FakePortal(images_per_product=0) as portal:
        report = await doctor(portal)
        assert portal.counters.files == 0
    assert report.check("public_files").status == "skip"
    assert report.check("public_files").detail == "no image listed with both links to fetch"


async def test_public_files_leave_no_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    for inject in (None, "forbidden"):
        async with FakePortal() as portal:
            if inject is not None:
                portal.inject_file(inject)
            report = await doctor(portal)
        assert report.check("public_files").status == ("ok" if inject is None else "warn")
        assert list(tmp_path.iterdir()) == []


async def test_public_files_refuse_a_link_into_the_private_network() -> None:
    # The files on another host that resolves to loopback: the default policy refuses it.
    async with FakePortal(files_origin="127.0.0.1") as portal:
        report = await doctor(portal)
        assert portal.counters.files == 0
        assert portal.counters.by_method["download"] == 0  # nothing to compare with
    found = report.check("public_files")
    assert found.status == "warn"
    assert found.detail.startswith("image 1 of product 1: the public link was refused ("), found


async def test_public_files_pass_over_images_without_both_links() -> None:
    async with FakePortal() as portal, webhook_client(portal) as client:
        visit = checks.Visit(client._caller, links=client._links)
        visit.image_rows = ({"id": "not an id"}, {"id": 7, "productId": 1, "type": "MORE_PHOTO"})
        found = await checks.public_files(visit)
        assert found == checks.skip("no image listed with both links to fetch")
        assert portal.counters.requests == 0


# --- clock, page mode, operating counters ----------------------------------------------------


@pytest.mark.parametrize(("skew", "side"), [(120.0, "ahead of"), (-120.0, "behind")])
async def test_clock_skew_warns(skew: float, side: str) -> None:
    async with FakePortal(clock_skew=skew) as portal:
        report = await doctor(portal)
    assert report.ok
    only(report, clock="warn")
    clock = report.check("clock")
    assert f"s {side} this machine's" in clock.detail
    assert "NTP" in (clock.hint or "")


@pytest.mark.parametrize("mode", ["source", "offset"])
async def test_page_mode_is_told_apart(mode: str) -> None:
    async with FakePortal(page_mode=mode) as portal:  # type: ignore[arg-type]
        report = await doctor(portal)
    only(report)
    assert report.check("page_mode").detail.startswith(f"{mode}:")


async def test_page_mode_looks_further_for_two_images() -> None:
    async with FakePortal(images_per_product=1, page_mode="offset") as portal:
        portal.catalog.add_image(4, name="second.png", content=b"\x89PNG\r\n\x1a\n")
        report = await doctor(portal)
        assert portal.counters.by_method["batch"] == 2  # the look-up, and the batch check
    only(report)
    assert report.check("page_mode").detail.startswith("offset:")


async def test_page_mode_skips_without_a_product_of_two_images() -> None:
    async with FakePortal(images_per_product=1) as portal:
        report = await doctor(portal)
    assert report.ok
    only(report, page_mode="skip")
    assert report.check("page_mode").detail == (
        "none of the first 10 product(s) has two images or more"
    )


@pytest.mark.parametrize(
    ("report_mode", "status", "detail"),
    [
        ("full", "ok", "operating and operating_reset_at are reported"),
        ("operating", "warn", "operating is reported without operating_reset_at"),
        ("none", "warn", "no operating counters in the time block"),
    ],
)
async def test_operating_counters(report_mode: str, status: str, detail: str) -> None:
    async with FakePortal(operating_report=report_mode) as portal:  # type: ignore[arg-type]
        report = await doctor(portal)
    assert report.ok
    only(report, operating_counters=status)
    assert report.check("operating_counters").detail.startswith(detail)


# --- batch and write -------------------------------------------------------------------------


async def test_a_failing_batch_fails() -> None:
    async with FakePortal() as portal:
        portal.inject("command_error", method="server.time", body=ACCESS_DENIED)
        report = await doctor(portal)
    assert not report.ok
    only(report, batch="fail")
    assert "ACCESS_DENIED" in report.check("batch").detail


def images_of(portal: FakePortal, product: int) -> Sequence[str]:
    return [image.name for image in portal.catalog.images(product)]


async def test_write_check_adds_inside_a_batch_and_deletes() -> None:
    async with FakePortal() as portal:
        before = images_of(portal, 2)
        report = await doctor(portal, write_check=2)
        assert report.ok
        assert report.checks[-1].name == "write"
        only(report)
        assert report.check("write").detail.startswith(
            "product 2: a 1x1 image added inside a batch"
        )
        assert portal.counters.commands["catalog.productimage.add"] == 1
        assert portal.counters.by_method["catalog.productimage.delete"] == 1
        assert images_of(portal, 2) == before


async def test_write_check_without_adds_in_batch_warns() -> None:
    async with FakePortal(batch_writes=False) as portal:
        before = images_of(portal, 2)
        report = await doctor(portal, write_check=2)
        assert report.ok
        only(report, write="warn")
        assert "ERROR_BATCH_METHOD_NOT_ALLOWED" in report.check("write").detail
        assert portal.counters.by_method["catalog.productimage.add"] == 1  # the plain add
        assert images_of(portal, 2) == before


async def test_write_check_without_write_access_fails() -> None:
    async with FakePortal(batch_writes=False) as portal:
        portal.catalog.deny_write(2)
        report = await doctor(portal, write_check=2)
    assert not report.ok
    only(report, write="fail")
    assert report.check("write").detail.startswith("no write access to product 2")


async def test_write_check_names_the_image_its_delete_left() -> None:
    async with FakePortal() as portal:
        portal.inject("error", method="catalog.productImage.delete", status=403, body=ACCESS_DENIED)
        report = await doctor(portal, write_check=2)
        assert not report.ok
        write = report.check("write")
        assert write.status == "fail"
        (left,) = [
            i for i in portal.catalog.images(2) if i.name.startswith("bitrix-images-doctor-")
        ]
        assert left.name.endswith(".png")
        assert f"image {left.id} was added to product 2" in write.detail
        assert write.hint == f"delete it by hand: bitrix-images delete 2 {left.id}"


# --- the command line ------------------------------------------------------------------------


@pytest.mark.usefixtures("cli_env")
def test_cli_prints_one_line_per_check_and_a_verdict(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "doctor", "--webhook", served.url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["ok", name] for name in NAMES]
    assert lines[1] == "ok    auth                the webhook was accepted"
    assert lines[-1] == "ok: the portal is ready for list, mirror and upload"
    assert served.portal.webhook_code not in out


@pytest.mark.usefixtures("cli_env")
@pytest.mark.served(scopes=("crm",), clock_skew=120)
def test_cli_exits_1_and_prints_hints_when_not_ok(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "doctor", "--webhook", served.url)
    assert (code, err) == (1, "")
    lines = out.splitlines()
    scope = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["scope"])
    assert lines[scope].startswith("fail  scope ")
    assert lines[scope + 1].startswith(" " * 26 + "hint: edit the webhook")
    assert any(line.startswith("warn  clock ") for line in lines)
    assert lines[-1] == "not ok: scope, methods failed"


@pytest.mark.usefixtures("cli_env")
@pytest.mark.served(batch_writes=False)
def test_cli_json_is_the_report_alone(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "doctor", "--json", "--write-check", "3", "--webhook", served.url
    )
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert list(report) == ["ok", "checks"]
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == [*NAMES, "write"]
    for check in report["checks"]:
        assert list(check) == ["name", "status", "detail", "hint"]
    write = report["checks"][-1]
    assert write["status"] == "warn"
    assert isinstance(write["hint"], str)
    assert report["checks"][0]["hint"] is None
    assert len(out.splitlines()) == 1


@pytest.mark.usefixtures("cli_env")
def test_cli_dead_portal_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/rest/1/0123456789abcdef/"
    code, out, err = run_cli(capsys, "doctor", "--json", "--webhook", url)
    assert (code, err) == (1, "")
    report = json.loads(out)
    assert report["ok"] is False
    assert [c["status"] for c in report["checks"]] == ["fail"] + ["skip"] * (len(NAMES) - 1)
    assert "0123456789abcdef" not in out
    for bad in ("0", "abc", "-2"):
        code, _, err = run_cli(capsys, "doctor", "--write-check", bad, "--webhook", url)
        assert code == 2
        assert "--write-check" in err


# --- odd answers, handled one by one ---------------------------------------------------------


def answer(result: object) -> dict[str, object]:
    """A success envelope with *result*, as an injected answer."""
    return {"result": result}


async def test_scope_answering_no_list_fails_auth() -> None:
    async with FakePortal() as portal:
        portal.inject("error", method="scope", status=200, body=answer({"catalog": True}))
        report = await doctor(portal)
    assert report.check("auth").status == "fail"
    assert report.check("auth").detail == "scope answered dict, not a list of scopes"


async def test_methods_missing_or_refused() -> None:
    missing = answer({"isExisting": False, "isAvailable": False})
    async with FakePortal() as portal:
        portal.inject("error", method="method.get", status=200, body=missing)
        report = await doctor(portal)
    assert not report.ok
    methods = report.check("methods")
    assert (methods.status, methods.detail) == (
        "fail",
        "the portal does not have catalog.productImage.list",
    )
    async with FakePortal() as portal:
        portal.inject("error", method="method.get", status=403, body=ACCESS_DENIED)
        report = await doctor(portal)
    methods = report.check("methods")
    assert methods.status == "fail"
    assert methods.detail == "method.get: Access denied. (ACCESS_DENIED)"
    assert methods.hint == "the webhook's user lacks the rights this needs"


async def test_read_without_a_catalog_warns() -> None:
    async with FakePortal() as portal:
        portal.inject(
            "error", method="catalog.catalog.list", status=200, body=answer({"catalogs": []})
        )
        report = await doctor(portal)
    assert report.ok
    only(report, read="warn", page_mode="skip", public_files="skip")
    assert "no product catalog" in report.check("read").detail
    unreadable = answer({"catalogs": [{"id": 1, "iblockId": None}, "junk"]})
    async with FakePortal() as portal:
        portal.inject("error", method="catalog.catalog.list", status=200, body=unreadable)
        report = await doctor(portal)
    only(report, read="warn", page_mode="skip", public_files="skip")
    assert "no product found" in report.check("read").detail


async def test_read_refused_otherwise_fails_with_the_error() -> None:
    async with FakePortal() as portal:
        portal.inject("error", method=LIST, status=403, body=ACCESS_DENIED)
        report = await doctor(portal)
    assert not report.ok
    read = report.check("read")
    assert read.status == "fail"
    assert read.detail == f"{'catalog.productImage.list'}: Access denied. (ACCESS_DENIED)"


async def test_clock_of_an_unreadable_date_warns() -> None:
    async with FakePortal() as portal:
        portal.inject("error", method="server.time", status=200, body=answer("soon"))
        report = await doctor(portal)
    only(report, clock="warn")
    assert report.check("clock").detail == "server.time answered 'soon', not a date"
    refused = {"error": "ERROR_CORE", "error_description": "no time today"}
    async with FakePortal() as portal:
        portal.inject("error", method="server.time", status=400, body=refused)
        report = await doctor(portal)
    clock = report.check("clock")
    assert (clock.status, clock.detail) == ("fail", "server.time: no time today (ERROR_CORE)")
    assert clock.hint is None
    assert report.ok


async def test_a_slow_check_fails_on_its_own_time(monkeypatch: pytest.MonkeyPatch) -> None:
    quick = tuple(
        attrs.evolve(step, timeout=0.05) if step.name == "clock" else step for step in _doctor.STEPS
    )
    monkeypatch.setattr(_doctor, "STEPS", quick)
    async with FakePortal() as portal:
        portal.inject("delay", method="server.time", delay=2.0)
        report = await doctor(portal)
    clock = report.check("clock")
    assert (clock.status, clock.detail) == ("fail", "no answer within 0.05 s")
    assert report.ok  # the clock is not needed by list, mirror or upload


async def test_a_batch_without_its_command_fails() -> None:
    empty = answer({"result": [], "result_error": [], "result_total": [], "result_next": []})
    async with FakePortal() as portal:
        portal.inject("error", method="batch", status=200, body=empty)
        report = await doctor(portal)
    assert not report.ok
    only(report, batch="fail")
    assert report.check("batch").detail == "the batch answered without its command's result"


async def test_write_check_refusals_in_a_batch() -> None:
    async with FakePortal() as portal:
        portal.catalog.deny_write(2)
        report = await doctor(portal, write_check=2)
        assert report.check("write").detail.startswith("no write access to product 2")
        report = await doctor(portal, write_check=999)
        assert report.check("write").detail.startswith("product 999 was not found")
        portal.inject(
            "command_error", method=ADD, body={"error": "ERROR_CORE", "error_description": "x"}
        )
        report = await doctor(portal, write_check=3)
        assert report.check("write").detail.startswith("the add on product 3 failed")
        assert writes(portal) == 3  # three adds refused, nothing to delete


async def test_write_check_with_its_answer_lost() -> None:
    # The plain add, after the batch refused it: its answer is lost once it was applied.
    async with FakePortal(batch_writes=False) as portal:
        portal.inject("drop", method=ADD)
        report = await doctor(portal, write_check=2)
        write = report.check("write")
        assert write.status == "fail"
        assert write.detail.startswith("the answer to the add on product 2 was lost")
        (left,) = [
            i for i in portal.catalog.images(2) if i.name.startswith("bitrix-images-doctor-")
        ]
        assert write.hint == f"look for {left.name} on product 2 and delete it"
        assert portal.counters.by_method["catalog.productimage.delete"] == 0  # never replayed


async def test_write_check_with_a_delete_answering_false() -> None:
    async with FakePortal() as portal:
        portal.inject("error", method="catalog.productImage.delete", status=200, body=answer(False))
        report = await doctor(portal, write_check=2)
    write = report.check("write")
    assert write.status == "fail"
    assert "answered False, not true" in write.detail
    assert write.hint is not None
    assert write.hint.startswith("check product 2 and delete image ")


# --- connect, stage by stage -----------------------------------------------------------------


async def test_connect_names_dns() -> None:
    url = "https://doctor-check.invalid/rest/1/0123456789abcdef/"
    async with bx.BitrixClient.from_webhook(url) as client:
        report = await client.doctor()
    connect = report.check("connect")
    assert connect.status == "fail"
    assert connect.detail.startswith("DNS: "), connect
    assert "doctor-check.invalid" in connect.detail


async def test_connect_times_out_on_a_silent_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "CONNECT_TIMEOUT", 0.2)
    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/rest/1/0123456789abcdef/"
        async with bx.BitrixClient.from_webhook(url) as client:
            report = await client.doctor()
    connect = report.check("connect")
    assert (connect.status, connect.detail) == ("fail", "no answer within 0.2 s")
    assert {c.status for c in report.checks[1:]} == {"skip"}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
async def test_connect_names_a_refused_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(  # noqa: S603 -- a fixed command, its paths ours
        [*OPENSSL_CERT, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"https://127.0.0.1:{port}/rest/1/0123456789abcdef/"
        async with bx.BitrixClient.from_webhook(url) as client:
            report = await client.doctor()
    finally:
        await runner.cleanup()
    connect = report.check("connect")
    assert connect.status == "fail"
    assert connect.detail.startswith("TLS: the portal's certificate was refused ("), connect
    assert connect.hint is not None
    assert "certificate" in connect.hint


def test_ids_read_from_answers() -> None:
    rows = [{"id": 1}, {"id": "2"}, {"id": True}, {"id": "x"}, {"id": None}, "junk"]
    assert _image_ids({"productImages": rows}) == (1, 2)
    assert _image_ids(None) == _image_ids({"productImages": {}}) == ()


async def test_page_mode_and_counters_on_what_no_portal_here_sends() -> None:
    async with FakePortal() as portal, webhook_client(portal) as client:
        caller = client._caller  # the doctor's own seam: one check, on a Visit of ours
        visit = checks.Visit(caller)
        visit.product_id, visit.product_ids, visit.image_ids = 1, (1,), (998, 999)
        found = await checks.page_mode(visit)
        assert found.status == "warn"
        assert "neither all its images nor all but the first" in found.detail
        visit.time = None
        found = await checks.operating_counters(checks.Visit(caller))
        assert found == checks.skip("no answer carried a time block")


async def test_a_server_that_hangs_up_fails_connect() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/rest/1/0123456789abcdef/"
        async with bx.BitrixClient.from_webhook(url) as client:
            report = await client.doctor()
    connect = report.check("connect")
    assert connect.status == "fail"
    assert connect.detail.startswith("the request failed ("), connect


@pytest.mark.usefixtures("cli_env")
def test_cli_saves_the_refresh_doctor_makes(
    served: ThreadPortal,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    portal = served.portal
    for name, value in {
        "BITRIX_CLIENT_ENDPOINT": str(portal.client_endpoint),
        "BITRIX_ACCESS_TOKEN": portal.access_token,
        "BITRIX_REFRESH_TOKEN": portal.refresh_token,
        "BITRIX_CLIENT_ID": portal.client_id,
        "BITRIX_CLIENT_SECRET": portal.client_secret,
        "BITRIX_OAUTH_URL": str(portal.oauth_url),
    }.items():
        monkeypatch.setenv(name, value)
    served.call(portal.expire_access_token)
    tokens = tmp_path / "tokens.json"
    code, out, err = run_cli(capsys, "doctor", "--json", "--token-file", str(tokens))
    assert (code, err) == (0, "")
    auth = json.loads(out)["checks"][1]
    assert auth["detail"].startswith("the OAuth access token had expired; refreshed")
    saved = json.loads(tokens.read_text())
    assert saved["access_token"] == portal.access_token
    assert portal.counters.refreshes == 1
    assert portal.access_token not in out
