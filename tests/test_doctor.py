"""``client.doctor()``: each check against the embedded portal's options, over loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence

import pytest
from support import ThreadPortal, oauth_client, run_cli, webhook_client

import bitrix_images as bx
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
    """Every check ok or skipped as a placeholder, but the *expected* ones."""
    found = statuses(report)
    for name, status in found.items():
        assert status == expected.get(name, "skip" if name == "public_files" else "ok"), (
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
        # One HEAD for connect, then 12 REST requests: scope, 5 method.get, catalog.catalog.list,
        # catalog.product.list, one list, server.time, the start=1 list, one batch.
        assert client.stats.requests == 13
        assert portal.counters.requests == 13
        assert sum(portal.counters.by_method.values()) == 12
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
    only(report, read="warn", page_mode="skip")
    assert "no product" in report.check("read").detail


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
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["skip" if name == "public_files" else "ok", name] for name in NAMES
    ]
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
