"""What a portal check asks the embedded portal (``scope``, ``method.get``, ``server.time``,
``app.info``) and the options that make each check fail: ``scopes``, ``clock_skew``,
``batch_writes``. Shapes from DOCS api-reference/common/system/*.md."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import quote

import aiohttp
import pytest
from support import PNG, FakeClock, call

from bitrix_images.testing import FakePortal

LIST = "catalog.productImage.list"
ADD = "catalog.productImage.add"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_scope_and_method_get(session: aiohttp.ClientSession) -> None:
    async with FakePortal() as portal:
        status, body = await call(session, portal.webhook_url / "scope", {})
        assert (status, body["result"]) == (200, ["catalog"])
        assert set(body["time"]) >= {"start", "finish", "operating"}
        _, body = await call(session, portal.webhook_url / "scope", {"full": True})
        assert "catalog" in body["result"]
        assert "crm" in body["result"]
        _, body = await call(session, portal.webhook_url / "scope", {"full": "0"})
        assert body["result"] == ["catalog"]
        method_get = portal.webhook_url / "method.get"
        for name in (LIST, ADD, "catalog.productimage.delete", "batch", "server.time"):
            _, body = await call(session, method_get, {"name": name})
            assert body["result"] == {"isExisting": True, "isAvailable": True}, name
        for payload in ({"name": "catalog.nothing.here"}, {"name": ""}, {}):
            _, body = await call(session, method_get, payload)
            assert body["result"] == {"isExisting": False, "isAvailable": False}


async def test_without_catalog_scope(session: aiohttp.ClientSession) -> None:
    async with FakePortal(scopes=("crm", "user")) as portal:
        _, body = await call(session, portal.webhook_url / "scope", {})
        assert body["result"] == ["crm", "user"]
        status, body = await call(session, portal.webhook_url / LIST, {"productId": 1})
        assert (status, body["error"]) == (401, "insufficient_scope")
        assert "webhook token" in body["error_description"]
        for method in ("catalog.product.list", "catalog.catalog.list"):
            status, body = await call(session, portal.webhook_url / method, {})
            assert (status, body["error"]) == (401, "insufficient_scope")
        _, body = await call(session, portal.webhook_url / "method.get", {"name": LIST})
        assert body["result"] == {"isExisting": True, "isAvailable": False}
        # Inside a batch the refusal is per command; basic methods still answer.
        cmd = {"l": f"{LIST}?productId=1", "t": "server.time"}
        status, body = await call(session, portal.webhook_url / "batch", {"cmd": cmd})
        assert status == 200
        assert body["result"]["result_error"]["l"]["error"] == "insufficient_scope"
        assert isinstance(body["result"]["result"]["t"], str)
        # An OAuth token of the same portal says "access token".
        url = portal.client_endpoint / LIST
        _, body = await call(session, url, {"productId": 1, "auth": portal.access_token})
        assert "access token" in body["error_description"]


def test_scopes_must_be_a_sequence_of_names() -> None:
    with pytest.raises(TypeError, match="sequence"):
        FakePortal(scopes="catalog")


async def test_server_time_and_clock_skew(session: aiohttp.ClientSession) -> None:
    clock = FakeClock(1_700_000_000.25)
    async with FakePortal(clock=clock) as portal:
        _, body = await call(session, portal.webhook_url / "server.time", {})
        assert datetime.fromisoformat(body["result"]).timestamp() == 1_700_000_000
        assert body["time"]["start"] == clock.now
    async with FakePortal(clock=clock, clock_skew=-90.0) as portal:
        _, body = await call(session, portal.webhook_url / "server.time", {})
        assert datetime.fromisoformat(body["result"]).timestamp() == 1_700_000_000 - 90
        block = body["time"]
        assert block["start"] == clock.now - 90
        assert datetime.fromisoformat(block["date_start"]).timestamp() == 1_700_000_000 - 90
        assert block["operating_reset_at"] == int(clock.now) + 600 - 90


async def test_app_info(session: aiohttp.ClientSession) -> None:
    async with FakePortal() as portal:
        status, body = await call(session, portal.webhook_url / "app.info", {})
        assert status == 200
        assert body["result"]["SCOPE"] == ["catalog"]
        assert "LICENSE" in body["result"]
        url = portal.client_endpoint / "app.info"
        status, body = await call(session, url, {"auth": portal.access_token})
        assert status == 200
        info = body["result"]
        assert info["CODE"] == portal.client_id
        assert (info["STATUS"], info["INSTALLED"], info["PAYMENT_EXPIRED"]) == ("L", True, "N")
        assert set(info) >= {"ID", "VERSION", "DAYS", "LANGUAGE_ID", "LICENSE"}


async def test_batch_writes_refused(session: aiohttp.ClientSession) -> None:
    fields = {"productId": 1, "type": "MORE_PHOTO"}
    content = base64.b64encode(PNG).decode()
    add = f"{ADD}?fields[productId]=1&fileContent[]=x.png&fileContent[]={quote(content)}"
    cmd = {
        "add": add,
        "del": "catalog.productImage.delete?productId=1&id=1",
        "l": LIST + "?productId=1",
    }
    async with FakePortal(batch_writes=False) as portal:
        status, body = await call(session, portal.webhook_url / "batch", {"cmd": cmd})
        assert status == 200
        errors = body["result"]["result_error"]
        assert errors["add"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
        assert errors["del"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
        assert [i["id"] for i in body["result"]["result"]["l"]["productImages"]] == [1, 2, 3]
        # Outside a batch the same write works.
        payload = {"fields": fields, "fileContent": ["x.png", content]}
        status, body = await call(session, portal.webhook_url / ADD, payload)
        assert status == 200
    async with FakePortal() as portal:
        _, body = await call(session, portal.webhook_url / "batch", {"cmd": cmd})
        assert body["result"]["result_error"] == []
        assert len(portal.catalog.images(1)) == 3  # one added, one deleted
