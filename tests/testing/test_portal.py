"""The embedded portal over real loopback HTTP: routes, auth, encodings, methods, batch."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
import pytest
import yarl
from support import FakeClock, call, get, post_form

from bitrix_images.testing import (
    INTERNAL_SERVER_ERROR,
    FakePortal,
    StoredImage,
)
from bitrix_images.testing._catalog import Catalog, image_mime, make_png
from bitrix_images.testing._phpquery import (
    http_build_query,
    is_list_keys,
    parse_str,
    php_array,
    php_intval,
    php_values,
)

LIST = "catalog.productImage.list"
PNG = make_png(999_999, 7, None)
PNG_B64 = base64.b64encode(PNG).decode()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    async with FakePortal(products=5, images_per_product=3) as portal:
        yield portal


def hook(portal: FakePortal, method: str) -> yarl.URL:
    return portal.webhook_url / method


# -- addresses and lifetime -----------------------------------------------------------------


async def test_addresses(portal: FakePortal) -> None:
    port = portal.port
    assert port > 0
    assert portal.origin == yarl.URL(f"http://127.0.0.1:{port}")
    assert portal.webhook_url == yarl.URL(f"http://127.0.0.1:{port}/rest/1/{portal.webhook_code}/")
    assert portal.client_endpoint == yarl.URL(f"http://127.0.0.1:{port}/rest/")
    assert portal.oauth_url == yarl.URL(f"http://127.0.0.1:{port}/oauth/token/")
    assert len(portal.webhook_code) == 16
    assert portal.user_id == 1
    assert portal.client_id.startswith("local.")
    assert portal.client_secret
    assert portal.access_token != portal.refresh_token


async def test_start_close_without_context_manager(session: aiohttp.ClientSession) -> None:
    portal = FakePortal(products=1, webhook_code="abc", user_id=7)
    await portal.start()
    await portal.start()  # a second start does nothing
    assert str(portal.webhook_url).endswith("/rest/7/abc/")
    status, body = await call(session, hook(portal, LIST), {"productId": 1})
    assert status == 200
    assert body["total"] == 3
    await portal.close()
    await portal.close()  # harmless


async def test_port_in_use_is_reported() -> None:
    async with FakePortal() as first:
        with pytest.raises(OSError):  # noqa: PT011 - errno differs by platform
            await FakePortal(port=first.port).start()


def test_invalid_page_mode() -> None:
    with pytest.raises(ValueError, match="page_mode"):
        FakePortal(page_mode="pages")  # type: ignore[arg-type]  # the point of the test


async def test_unknown_path_is_an_nginx_404(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    async with session.get(portal.origin / "favicon.ico") as response:
        assert response.status == 404
        assert response.content_type == "text/html"
        assert "nginx" in await response.text()


# -- the list method and its envelope ---------------------------------------------------------


async def test_list_documented_shape(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    async with session.post(hook(portal, LIST + ".json"), json={"productId": 2}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        body = await response.json()
    assert set(body) == {"result", "total", "time"}
    images = body["result"]["productImages"]
    assert [i["id"] for i in images] == [4, 5, 6]
    assert body["total"] == 3
    assert [i["type"] for i in images] == ["DETAIL_PICTURE", "MORE_PHOTO", "MORE_PHOTO"]
    assert [i["name"] for i in images] == ["photo-1.png", "photo-2.png", "photo-3.png"]
    first = images[0]
    assert set(first) == {
        "id",
        "name",
        "productId",
        "type",
        "createTime",
        "downloadUrl",
        "detailUrl",
    }
    assert first["productId"] == 2
    created = datetime.fromisoformat(first["createTime"])
    assert created.utcoffset() == timedelta(hours=2)
    assert first["detailUrl"].startswith("/upload/iblock/")
    assert first["downloadUrl"].startswith(f"{portal.webhook_url}download/?token=catalog%7C")
    time_block = body["time"]
    assert set(time_block) == {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    }
    assert isinstance(time_block["operating_reset_at"], int)
    assert datetime.fromisoformat(time_block["date_start"]).utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    "path",
    ["catalog.productImage.list", "CATALOG.PRODUCTIMAGE.LIST.json", "catalog.productimage.list/"],
)
async def test_method_name_forms(
    portal: FakePortal, session: aiohttp.ClientSession, path: str
) -> None:
    status, body = await call(session, str(portal.webhook_url) + path, {"productId": 1})
    assert status == 200
    assert body["total"] == 3
    assert portal.counters.by_method["catalog.productimage.list"] == 1


async def test_no_time_block_without_operating_limit(session: aiohttp.ClientSession) -> None:
    async with FakePortal(operating_limit=None) as portal:
        _, body = await call(session, hook(portal, LIST), {"productId": 1})
    assert "operating" not in body["time"]
    assert "operating_reset_at" not in body["time"]


async def test_select_is_honoured(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    _, body = await call(
        session, hook(portal, LIST), {"productId": 1, "select": ["id", "PRODUCT_ID", "bogus"]}
    )
    assert body["result"]["productImages"][0] == {"id": 1, "productId": 1}
    _, body = await call(session, hook(portal, LIST), {"productId": 1, "select": []})
    assert len(body["result"]["productImages"][0]) == 7
    _, body = await call(session, hook(portal, LIST), {"productId": 1, "select": "name"})
    assert body["result"]["productImages"][0] == {"name": "photo-1.png"}


# -- auth ---------------------------------------------------------------------------------


async def test_webhook_wrong_code_or_user(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    expected = {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}
    bad_code = portal.origin / "rest" / "1" / "nope" / LIST
    bad_user = portal.origin / "rest" / "2" / portal.webhook_code / LIST
    for url in (bad_code, bad_user):
        status, body = await call(session, url, {"productId": 1})
        assert (status, body) == (401, expected)


async def test_oauth_token_forms(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    url = portal.client_endpoint / LIST
    status, body = await call(session, url, {"productId": 1, "auth": portal.access_token})
    assert status == 200
    assert body["result"]["productImages"][0]["downloadUrl"].startswith(
        f"{portal.client_endpoint}download.json?auth={portal.access_token}&token="
    )
    status, _ = await call(session, url, {"productId": 1, "access_token": portal.access_token})
    assert status == 200
    status, body = await call(
        session, url, {"productId": 1}, headers={"Authorization": f"Bearer {portal.access_token}"}
    )
    assert status == 200
    assert body["result"]["productImages"][0]["downloadUrl"].startswith(
        f"{portal.client_endpoint}download.json?token="
    )
    # auth in the query string, payload in the JSON body (CRestUtil::getRequestData).
    status, _ = await call(session, url.with_query(auth=portal.access_token), {"productId": 1})
    assert status == 200


async def test_oauth_errors(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    url = portal.client_endpoint / LIST
    status, body = await call(session, url, {"productId": 1})
    assert (status, body) == (
        401,
        {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
    )
    status, body = await call(session, url, {"productId": 1, "auth": "forged"})
    assert (status, body["error"]) == (401, "invalid_token")
    assert body["error_description"] == "Unable to get application by token"
    portal.expire_access_token()
    status, body = await call(session, url, {"productId": 1, "auth": portal.access_token})
    assert (status, body) == (
        401,
        {"error": "expired_token", "error_description": "The access token provided has expired"},
    )


async def test_expire_token_after_requests(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    url = portal.client_endpoint / LIST
    portal.expire_token_after(requests=2)
    statuses = [
        (await call(session, url, {"productId": 1, "auth": portal.access_token}))[0]
        for _ in range(4)
    ]
    assert statuses == [200, 200, 401, 401]


async def test_expire_token_after_seconds(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakePortal(clock=clock) as portal:
        url = portal.client_endpoint / LIST
        portal.expire_token_after(seconds=10)
        assert (await call(session, url, {"productId": 1, "auth": portal.access_token}))[0] == 200
        clock.advance(10)
        status, body = await call(session, url, {"productId": 1, "auth": portal.access_token})
        assert (status, body["error"]) == (401, "expired_token")
        # Tokens live an hour by themselves (DOCS settings/oauth/index.md).
        await _refresh(session, portal)
        clock.advance(3600)
        status, body = await call(session, url, {"productId": 1, "auth": portal.access_token})
        assert (status, body["error"]) == (401, "expired_token")


async def _refresh(session: aiohttp.ClientSession, portal: FakePortal) -> dict[str, object]:
    query = {
        "grant_type": "refresh_token",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "refresh_token": portal.refresh_token,
    }
    status, body = await get(session, portal.oauth_url.with_query(query))
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def test_refresh_get_and_post(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    old_access, old_refresh = portal.access_token, portal.refresh_token
    body = await _refresh(session, portal)
    assert body["access_token"] == portal.access_token != old_access
    assert body["refresh_token"] == portal.refresh_token != old_refresh
    assert body["expires_in"] == 3600
    assert isinstance(body["expires"], int)
    assert body["client_endpoint"] == str(portal.client_endpoint)
    assert set(body) >= {
        "server_endpoint",
        "domain",
        "member_id",
        "scope",
        "status",
        "user_id",
    }
    assert portal.counters.refreshes == 1
    assert portal.counters.by_method["oauth.token"] == 1
    # The old refresh token stops working; the old access token lives until it expires.
    form = (
        f"grant_type=refresh_token&client_id={portal.client_id}"
        f"&client_secret={portal.client_secret}&refresh_token={old_refresh}"
    )
    status, body = await post_form(session, portal.oauth_url, form)
    assert (status, body["error"]) == (400, "invalid_grant")
    status, _ = await call(
        session, portal.client_endpoint / LIST, {"productId": 1, "auth": old_access}
    )
    assert status == 200
    form = form.replace(old_refresh, portal.refresh_token)
    status, body = await post_form(session, str(portal.oauth_url).rstrip("/"), form)
    assert status == 200
    assert portal.counters.refreshes == 2


async def test_refresh_errors(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    base = {
        "grant_type": "refresh_token",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "refresh_token": portal.refresh_token,
    }
    status, body = await get(session, portal.oauth_url.with_query({**base, "client_secret": "x"}))
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = await get(session, portal.oauth_url.with_query({**base, "grant_type": "code"}))
    assert (status, body["error"]) == (400, "invalid_request")
    portal.reject_refresh = True
    status, body = await get(session, portal.oauth_url.with_query(base))
    assert (status, body["error"]) == (400, "invalid_grant")
    assert portal.counters.refreshes == 0


# -- request encodings ------------------------------------------------------------------------


async def test_form_body_with_php_brackets(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    status, body = await post_form(
        session, hook(portal, LIST), "productId=3&select[]=id&select[]=name"
    )
    assert status == 200
    assert body["result"]["productImages"][0] == {"id": 7, "name": "photo-1.png"}
    assert portal.counters.calls[-1].params == {
        "productId": "3",
        "select": {"0": "id", "1": "name"},
    }


async def test_query_string_and_body_override(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    status, body = await get(session, hook(portal, LIST).with_query("productId=2&select[0]=id"))
    assert status == 200
    assert body["result"]["productImages"] == [{"id": 4}, {"id": 5}, {"id": 6}]
    status, body = await call(
        session, hook(portal, LIST).with_query(productId="2"), {"productId": 4}
    )
    assert body["result"]["productImages"][0]["productId"] == 4
    assert portal.counters.calls[-1].http_method == "POST"


async def test_bad_json_means_no_params(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    headers = {"Content-Type": "application/json"}
    async with session.post(hook(portal, LIST), data=b"{not json", headers=headers) as response:
        assert response.status == 400
        body = await response.json()
    assert body == {
        "error": 100,
        "error_description": "Could not find value for parameter {productId}",
    }
    async with session.post(hook(portal, LIST), data=b'["x"]', headers=headers) as response:
        assert response.status == 400
    assert portal.counters.calls[-1].params == {"0": "x"}


async def test_multipart_body(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("productId", "5")
    form.add_field("select[]", "id")
    form.add_field("file", b"ignored", filename="x.bin")
    async with session.post(hook(portal, LIST), data=form) as response:
        body = await response.json()
    assert body["result"]["productImages"] == [{"id": 13}, {"id": 14}, {"id": 15}]


async def test_unknown_method(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    status, body = await call(session, hook(portal, "crm.deal.list"), {})
    assert (status, body) == (
        404,
        {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
    )
    status, body = await call(session, portal.webhook_url, {})
    assert status == 404


# -- get / add / delete / getFields -------------------------------------------------------------


GET = "catalog.productImage.get"


@pytest.mark.parametrize(
    ("payload", "code", "text"),
    [
        ({"productId": 1}, 100, "Could not find value for parameter {id}"),
        ({"id": 1}, 100, "Could not find value for parameter {productId}"),
        ({"id": "x", "productId": 1}, 100, "Invalid value x to match with parameter {id}."),
        ({"id": 1, "productId": 0}, 0, "Empty productID"),
        ({"id": 1, "productId": 99}, 0, "Product was not found"),
        ({"id": 4, "productId": 1}, 0, "Image does not exist"),
        ({"id": 10**6, "productId": 1}, 0, "Image does not exist"),
    ],
)
async def test_get_errors(
    portal: FakePortal,
    session: aiohttp.ClientSession,
    payload: dict[str, object],
    code: int,
    text: str,
) -> None:
    status, body = await call(session, hook(portal, GET), payload)
    assert status == 400
    assert body["error"] == code
    assert type(body["error"]) is int
    assert body["error_description"].startswith(text)
    assert "time" not in body


async def test_get_and_read_denied(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    status, body = await call(session, hook(portal, GET), {"productId": "1", "id": 2.0})
    assert status == 200
    assert set(body) == {"result", "time"}
    assert body["result"]["productImage"]["id"] == 2
    portal.catalog.deny_read(1)
    for method, payload in ((GET, {"productId": 1, "id": 2}), (LIST, {"productId": 1})):
        status, body = await call(session, hook(portal, method), payload)
        assert (status, body) == (
            400,
            {"error": 200040300010, "error_description": "Access Denied"},
        )


ADD = "catalog.productImage.add"


async def test_add_json_appends_and_replaces(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    payload = {
        "fields": {"productId": 1, "type": "MORE_PHOTO"},
        "fileContent": ["new.png", PNG_B64],
    }
    status, body = await call(session, hook(portal, ADD), payload)
    assert status == 200
    added = body["result"]["productImage"]
    assert added["id"] == 16  # ids are global and increasing
    assert (added["name"], added["type"], added["productId"]) == ("new.png", "MORE_PHOTO", 1)
    assert [i.id for i in portal.catalog.images(1)] == [1, 2, 3, 16]
    assert portal.catalog.images(1)[-1].content == PNG
    payload = {
        "fields": {"productId": 1, "type": "DETAIL_PICTURE"},
        "fileContent": ["d.png", PNG_B64],
    }
    status, body = await call(session, hook(portal, ADD), payload)
    assert body["result"]["productImage"]["type"] == "DETAIL_PICTURE"
    assert [i.id for i in portal.catalog.images(1)] == [17, 2, 3, 16]
    payload = {
        "fields": {"productId": 1, "type": "PREVIEW_PICTURE"},
        "fileContent": ["p.png", PNG_B64],
    }
    await call(session, hook(portal, ADD), payload)
    assert [i.type for i in portal.catalog.images(1)][:2] == ["PREVIEW_PICTURE", "DETAIL_PICTURE"]
    # No type (or an unknown one) appends a MORE_PHOTO value.
    payload = {"fields": {"productId": 1, "type": "weird"}, "fileContent": ["", PNG_B64]}
    status, body = await call(session, hook(portal, ADD), payload)
    added = body["result"]["productImage"]
    assert added["type"] == "MORE_PHOTO"
    assert len(added["name"]) == 32  # a nameless file gets a random name
    assert portal.catalog.image_count() == 15 + 3


async def test_add_form_encoded(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    form = http_build_query({"fields": {"productId": 2}, "fileContent": ["dir/form.png", PNG_B64]})
    status, body = await post_form(session, hook(portal, ADD), form)
    assert status == 200, body
    assert body["result"]["productImage"]["name"] == "form.png"
    assert portal.catalog.images(2)[-1].content == PNG


@pytest.mark.parametrize(
    ("payload", "code", "text"),
    [
        ({"fileContent": ["a.png", PNG_B64]}, 100, "Could not find value for parameter {fields}"),
        ({"fields": {"productId": 1}}, 100, "Could not find value for parameter {fileContent}"),
        ({"fields": "x", "fileContent": ["a", "b"]}, 100, "Invalid value x to match"),
        (
            {"fields": {"productId": 77}, "fileContent": ["a.png", PNG_B64]},
            0,
            "Product was not found",
        ),
        ({"fields": {}, "fileContent": ["a.png", PNG_B64]}, 0, "Product was not found"),
        ({"fields": {"productId": 1}, "fileContent": ["a.png", ""]}, 0, "Could not save image."),
        ({"fields": {"productId": 1}, "fileContent": ["a.png"]}, 0, "Could not save image."),
        (
            {"fields": {"productId": 1}, "fileContent": ["a.png", "false"]},
            0,
            "Could not save image.",
        ),
        (
            {
                "fields": {"productId": 1},
                "fileContent": ["a.txt", base64.b64encode(b"hello").decode()],
            },
            0,
            "The file is not an image.",
        ),
    ],
)
async def test_add_errors(
    portal: FakePortal,
    session: aiohttp.ClientSession,
    payload: dict[str, object],
    code: int,
    text: str,
) -> None:
    status, body = await call(session, hook(portal, ADD), payload)
    assert status == 400
    assert body["error"] == code
    assert body["error_description"].startswith(text)
    assert portal.catalog.image_count() == 15


async def test_add_and_delete_modify_denied(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    portal.catalog.deny_write(1)
    denied = {"error": 200040300020, "error_description": "Access Denied"}
    payload = {"fields": {"productId": 1}, "fileContent": ["a.png", PNG_B64]}
    assert await call(session, hook(portal, ADD), payload) == (400, denied)
    delete = hook(portal, "catalog.productImage.delete")
    assert await call(session, delete, {"productId": 1, "id": 1}) == (400, denied)
    assert portal.catalog.image_count() == 15


async def test_delete(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    delete = hook(portal, "catalog.productImage.delete")
    status, body = await call(session, delete, {"productId": 1, "id": 2})
    assert (status, body["result"]) == (200, True)
    assert [i.id for i in portal.catalog.images(1)] == [1, 3]
    status, body = await call(session, delete, {"productId": 1, "id": 2})
    assert (status, body["error"], body["error_description"]) == (400, 0, "Image does not exist")
    status, body = await call(session, delete, {"productId": 2, "id": 1})
    assert body["error_description"] == "Image does not exist"
    status, body = await call(session, delete, {"productId": 99, "id": 1})
    assert body["error_description"] == "Product was not found"
    status, body = await call(session, delete, {"productId": 1})
    assert body["error"] == 100
    status, body = await call(session, delete, {"productId": 1, "id": 1})
    assert status == 200
    assert [i.id for i in portal.catalog.images(1)] == [3]
    status, body = await call(session, hook(portal, GET), {"productId": 1, "id": 1})
    assert body["error_description"] == "Image does not exist"
    assert portal.catalog.image_count() == 13


async def test_get_fields(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    status, body = await get(session, hook(portal, "catalog.productImage.getFields"))
    assert status == 200
    fields = body["result"]["productImage"]
    assert set(fields) == {
        "createTime",
        "detailUrl",
        "downloadUrl",
        "id",
        "name",
        "productId",
        "type",
    }
    assert fields["productId"] == {
        "isImmutable": False,
        "isReadOnly": False,
        "isRequired": True,
        "type": "string",
    }
    assert fields["createTime"]["type"] == "datetime"
    assert fields["id"]["isReadOnly"] is True


# -- page modes ---------------------------------------------------------------------------------


async def test_source_mode_237_images_in_one_answer(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=1, images_per_product=237) as portal:
        status, body = await call(session, hook(portal, LIST), {"productId": 1})
        assert status == 200
        ids = [i["id"] for i in body["result"]["productImages"]]
        assert ids == list(range(1, 238))
        assert body["total"] == 237
        assert "next" not in body
        _, body = await call(session, hook(portal, LIST), {"productId": 1, "start": 100})
        assert len(body["result"]["productImages"]) == 237  # start does not skip
        assert "next" not in body
        _, body = await call(session, hook(portal, LIST), {"productId": 1, "start": -1})
        assert "total" not in body
        assert len(body["result"]["productImages"]) == 237
        assert portal.counters.requests == 3


async def test_offset_mode_pages_by_50(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=1, images_per_product=237, page_mode="offset") as portal:
        ids: list[int] = []
        nexts: list[int] = []
        start: int | None = 0
        while start is not None:
            _, body = await call(session, hook(portal, LIST), {"productId": 1, "start": start})
            assert body["total"] == 237
            ids += [i["id"] for i in body["result"]["productImages"]]
            start = body.get("next")
            if start is not None:
                nexts.append(start)
        assert nexts == [50, 100, 150, 200]
        assert ids == list(range(1, 238))
        assert portal.counters.by_method["catalog.productimage.list"] == 5
        _, body = await call(session, hook(portal, LIST), {"productId": 1, "start": -1})
        assert set(body) == {"result", "time"}
        assert len(body["result"]["productImages"]) == 50


# -- catalog.product.list ----------------------------------------------------------------------


PRODUCTS = "catalog.product.list"


async def test_product_list_paging(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=120, images_per_product=0, iblock_id=20) as portal:
        ids: list[int] = []
        start: int | None = 0
        nexts = []
        while start is not None:
            _, body = await call(
                session,
                hook(portal, PRODUCTS),
                {"filter": {"iblockId": 20}, "select": ["id", "iblockId"], "start": start},
            )
            assert body["total"] == 120
            ids += [p["id"] for p in body["result"]["products"]]
            assert set(body["result"]["products"][0]) == {"id", "iblockId"}
            start = body.get("next")
            nexts.append(start)
        assert ids == list(range(1, 121))
        assert nexts == [50, 100, None]
        _, body = await call(
            session,
            hook(portal, PRODUCTS),
            {"filter": {"iblockId": 20, ">id": 100, "<=ID": 110}, "order": {"id": "DESC"}},
        )
        assert [p["id"] for p in body["result"]["products"]] == list(range(110, 100, -1))
        assert body["result"]["products"][0] == {"id": 110, "iblockId": 20, "name": "Product 110"}
        assert body["total"] == 10
        status, body = await post_form(
            session, hook(portal, PRODUCTS), "filter[iblockId]=20&start=-1&filter[id]=7"
        )
        assert set(body) == {"result", "time"}
        assert body["result"]["products"] == [{"id": 7, "iblockId": 20, "name": "Product 7"}]
        _, body = await call(session, hook(portal, PRODUCTS), {"filter": {"iblockId": 1}})
        assert (body["result"]["products"], body["total"]) == ([], 0)
        status, body = await call(session, hook(portal, PRODUCTS), {"select": ["id"]})
        assert (status, body["error"]) == (400, 0)


# -- batch ---------------------------------------------------------------------------------------


async def test_batch_quirks_and_errors(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    status, body = await call(session, hook(portal, "batch"), {"cmd": {}})
    assert status == 200
    assert body["result"] == {
        "result": [],
        "result_error": [],
        "result_total": [],
        "result_next": [],
        "result_time": [],
    }
    assert "time" in body
    cmd = [f"{LIST}?productId={p}&select[]=id" for p in (1, 2)]
    _, body = await call(session, hook(portal, "batch"), {"cmd": cmd})
    inner = body["result"]
    assert inner["result"] == [
        {"productImages": [{"id": 1}, {"id": 2}, {"id": 3}]},
        {"productImages": [{"id": 4}, {"id": 5}, {"id": 6}]},
    ]
    assert inner["result_total"] == [3, 3]
    assert inner["result_error"] == []
    assert set(inner["result_time"][0]) >= {"start", "operating"}
    cmd_map = {
        "ok": f"{LIST}?productId=1",
        "bad": f"{GET}?productId=1&id=99",
        "nested": "batch?cmd[x]=user.current",
        "dl": "download?token=x",
        "skip": 42,
        "unknown": "crm.deal.list",
    }
    _, body = await call(session, hook(portal, "batch"), {"cmd": cmd_map, "halt": 0})
    inner = body["result"]
    assert list(inner["result"]) == ["ok"]
    assert inner["result_error"] == {
        "bad": {"error": 0, "error_description": "Image does not exist"},
        "nested": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        },
        "dl": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        },
        "unknown": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
    }
    assert inner["result_total"] == {"ok": 3}
    assert inner["result_next"] == []
    assert portal.counters.by_method["batch"] == 3
    assert portal.counters.commands[GET.lower()] == 1


async def test_batch_halt(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    cmd = {"a": f"{LIST}?productId=1", "b": f"{GET}?productId=9&id=1", "c": f"{LIST}?productId=2"}
    for halt, expected in ((True, ["a"]), ("1", ["a"]), ("false", ["a"]), (0, ["a", "c"])):
        _, body = await call(session, hook(portal, "batch"), {"cmd": cmd, "halt": halt})
        assert list(body["result"]["result"]) == expected
        assert list(body["result"]["result_error"]) == ["b"]


async def test_batch_length_limit(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    cmd = {f"c{i}": f"{LIST}?productId=1&select[]=id" for i in range(53)}
    cmd["c0"] = None  # non-string entries are skipped but count toward the 50
    _, body = await call(session, hook(portal, "batch"), {"cmd": cmd})
    inner = body["result"]
    assert len(inner["result"]) == 49
    assert set(inner["result_error"]) == {"c50", "c51", "c52"}
    assert inner["result_error"]["c50"] == {
        "error": "ERROR_BATCH_LENGTH_EXCEEDED",
        "error_description": "Max batch length exceeded",
    }
    cmd = {f"c{i}": f"{LIST}?productId=1" for i in range(52)}
    _, body = await call(session, hook(portal, "batch"), {"cmd": cmd, "halt": 1})
    assert list(body["result"]["result_error"]) == ["c50"]


async def test_batch_form_encoded_and_paging(session: aiohttp.ClientSession) -> None:
    async with FakePortal(products=2, images_per_product=120, page_mode="offset") as portal:
        # Form bodies carry cmd values double encoded (DOCS data-encoding.md).
        inner = f"{LIST}?" + http_build_query({"productId": 1, "start": 50, "select": ["id"]})
        form = http_build_query({"cmd": {"p": inner, "q": f"{LIST}?productId=2&start=100"}})
        status, body = await post_form(session, hook(portal, "batch"), form)
        assert status == 200, body
        result = body["result"]
        assert [i["id"] for i in result["result"]["p"]["productImages"]] == list(range(51, 101))
        assert result["result_next"] == {"p": 100}
        assert result["result_total"] == {"p": 120, "q": 120}
        assert len(result["result"]["q"]["productImages"]) == 20


async def test_batch_uses_outer_oauth(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    payload = {"cmd": {"a": f"{LIST}?productId=1"}, "auth": portal.access_token}
    status, body = await call(session, portal.client_endpoint / "batch", payload)
    assert status == 200
    url = body["result"]["result"]["a"]["productImages"][0]["downloadUrl"]
    assert f"auth={portal.access_token}" in url


# -- downloads ------------------------------------------------------------------------------------


async def test_download_bytes_and_headers(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    _, body = await call(session, hook(portal, LIST), {"productId": 2})
    image = body["result"]["productImages"][1]
    stored = portal.catalog.images(2)[1]
    async with session.get(image["downloadUrl"]) as response:
        assert response.status == 200
        content = await response.read()
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["Content-Length"] == str(len(stored.content))
        assert response.headers["Content-Disposition"] == 'attachment; filename="photo-2.png"'
    assert content == stored.content
    async with session.get(portal.origin.join(yarl.URL(image["detailUrl"]))) as response:
        assert response.status == 200
        assert await response.read() == stored.content
    assert portal.counters.by_method["download"] == 1


async def test_download_refusals(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    _, body = await call(session, hook(portal, LIST), {"productId": 1})
    url = yarl.URL(body["result"]["productImages"][0]["downloadUrl"], encoded=True)
    token = url.query["token"]
    # Change the signature's last two characters to something they are not (a random key
    # makes "00" the real ending now and then, and then nothing was forged).
    tail = "11" if token.endswith("00") else "00"
    forged = url.with_query(token=token[:-2] + tail)
    status, body = await get(session, forged)
    assert (status, body["error"]) == (403, "ACCESS_DENIED")
    status, body = await get(session, url.with_query(token="garbage"))
    assert status == 403
    status, body = await get(session, url.with_query({}))
    assert status == 403
    # The link is signed for this webhook: another code cannot use it.
    other = portal.origin.with_path("/rest/1/other/download/").with_query(token=token)
    assert (await get(session, other))[0] == 401
    # A deleted image's link answers 404.
    portal.catalog.delete_image(1, 1)
    status, body = await get(session, url)
    assert status == 404
    async with session.get(portal.origin / "upload/iblock/abc/def/photo-1.png") as response:
        assert response.status == 404
    bad = portal.origin / "upload" / "iblock" / "abc" / ("z" * 32) / "photo-1.png"
    async with session.get(bad) as response:
        assert response.status == 404


async def test_download_with_oauth(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    url = portal.client_endpoint / LIST
    _, body = await call(session, url, {"productId": 1, "auth": portal.access_token})
    link = body["result"]["productImages"][0]["downloadUrl"]
    async with session.get(link) as response:
        assert await response.read() == portal.catalog.images(1)[0].content
    bearer = {"Authorization": f"Bearer {portal.access_token}"}
    _, body = await call(session, url, {"productId": 1}, headers=bearer)
    bearer_link = body["result"]["productImages"][0]["downloadUrl"]
    assert (await get(session, bearer_link))[0] == 401  # no auth embedded: needs the header
    async with session.get(bearer_link, headers=bearer) as response:
        assert response.status == 200
    portal.expire_access_token()
    status, body = await get(session, link)
    assert (status, body["error"]) == (401, "expired_token")


async def test_non_ascii_file_name(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    image = portal.catalog.add_image(3, name="фото 1.png", content=PNG)
    _, body = await call(session, hook(portal, GET), {"productId": 3, "id": image.id})
    result = body["result"]["productImage"]
    async with session.get(result["downloadUrl"]) as response:
        assert "filename*=UTF-8''%D1%84" in response.headers["Content-Disposition"]
    async with session.get(portal.origin.join(yarl.URL(result["detailUrl"], encoded=True))) as r:
        assert await r.read() == PNG


# -- counters ------------------------------------------------------------------------------------


async def test_counters_and_reset(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    await call(session, hook(portal, LIST), {"productId": 1})
    await call(session, hook(portal, "batch"), {"cmd": {"a": f"{LIST}?productId=1"}})
    await call(session, hook(portal, "nope"), {})
    counters = portal.counters
    assert counters.requests == 3
    assert counters.by_method == {"catalog.productimage.list": 1, "batch": 1, "nope": 1}
    assert counters.commands == {"catalog.productimage.list": 1}
    assert counters.by_status == {200: 2, 404: 1}
    assert [c.method for c in counters.calls] == ["catalog.productimage.list", "batch", "nope"]
    assert counters.calls[0].params == {"productId": 1}
    assert counters.in_flight == 0
    assert counters.max_in_flight == 1
    counters.reset()
    assert (counters.requests, counters.calls, counters.by_status) == (0, [], {})


async def test_record_calls_off(session: aiohttp.ClientSession) -> None:
    async with FakePortal(record_calls=False) as portal:
        await call(session, hook(portal, LIST), {"productId": 1})
        assert portal.counters.calls == []
        assert portal.counters.requests == 1


# -- the catalog ---------------------------------------------------------------------------------


def test_seeding_is_deterministic() -> None:
    one, two = Catalog(products=4, images_per_product=3), Catalog(products=4, images_per_product=3)
    assert [one.images(p) for p in one.product_ids()] == [two.images(p) for p in two.product_ids()]
    other_seed = Catalog(products=4, images_per_product=3, seed=1)
    assert other_seed.images(1)[0].content != one.images(1)[0].content
    images = [image for p in one.product_ids() for image in one.images(p)]
    assert [i.id for i in images] == list(range(1, 13))
    assert len({i.content for i in images}) == 12
    for image in images:
        assert isinstance(image, StoredImage)
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
        assert image.content.endswith(b"IEND\xaeB`\x82")
        assert image_mime(image.content) == "image/png"
        assert image.created.utcoffset() == timedelta(hours=2)
        assert f"image {image.id} ".encode() in image.content
    assert "bytes>" in repr(images[0])


@pytest.mark.parametrize(
    ("content", "mime"),
    [
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"GIF89a...", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"BM\x00\x00", "image/bmp"),
        (b"RIFF\x00\x00\x00\x00WAVE", None),
        (b"%PDF-1.4", None),
    ],
)
def test_image_mime(content: bytes, mime: str | None) -> None:
    assert image_mime(content) == mime


def test_image_size_padding() -> None:
    catalog = Catalog(products=1, images_per_product=1, image_size=65536)
    content = catalog.images(1)[0].content
    assert abs(len(content) - 65536) <= 16
    assert image_mime(content) == "image/png"
    assert len(Catalog(products=1, images_per_product=1).images(1)[0].content) < 200


def test_catalog_mutations() -> None:
    catalog = Catalog(products=2, images_per_product=2)
    assert catalog.product_ids() == [1, 2]
    new = catalog.add_product(images=2, name="Chair")
    assert new == 3
    assert catalog.product_name(3) == "Chair"
    assert catalog.product_name(1) == "Product 1"
    assert [i.id for i in catalog.images(3)] == [5, 6]
    assert catalog.add_product(product_id=10) == 10
    assert catalog.product_ids() == [1, 2, 3, 10]
    with pytest.raises(ValueError, match="taken"):
        catalog.add_product(product_id=1)
    with pytest.raises(KeyError):
        catalog.product_name(4)
    with pytest.raises(KeyError):
        catalog.images(4)
    with pytest.raises(KeyError):
        catalog.add_image(4, name="x.png", content=PNG)
    when = datetime.fromisoformat("2024-10-17T10:48:05+02:00")
    image = catalog.add_image(10, name="a.png", content=PNG, type="PREVIEW_PICTURE", created=when)
    assert (image.id, image.created, image.type) == (7, when, "PREVIEW_PICTURE")
    naive = catalog.add_image(10, name="n.png", content=PNG, created=datetime(2024, 1, 1))
    assert naive.created.utcoffset() == timedelta(hours=2)
    assert catalog.delete_image(10, naive.id)
    assert catalog.add_image(10, name="b.png", content=PNG, type="??").type == "MORE_PHOTO"
    catalog.add_image(1, name="c.png", content=PNG, type="DETAIL_PICTURE")
    assert [i.name for i in catalog.images(1)] == ["c.png", "photo-2.png"]
    assert catalog.find(1) is None
    assert catalog.find(2) is not None
    assert catalog.find(10**9) is None
    assert catalog.delete_image(1, 999) is False
    with pytest.raises(KeyError):
        catalog.delete_image(99, 1)
    assert catalog.delete_image(10, 7) is True
    assert catalog.image_count() == 4 + 2 + 1 + 1 - 1
    with pytest.raises(ValueError, match=">= 0"):
        Catalog(products=-1)


def test_million_images_are_virtual() -> None:
    catalog = Catalog(products=20_000, images_per_product=50)
    assert catalog.image_count() == 1_000_000
    last = catalog.images(20_000)
    assert [i.id for i in last][-1] == 1_000_000
    assert catalog.find(999_951) is not None
    assert len(catalog.product_ids()) == 20_000


async def test_seeded_images_over_http_match_catalog(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    _, body = await call(session, hook(portal, LIST), {"productId": 5})
    listed = body["result"]["productImages"]
    stored = portal.catalog.images(5)
    assert [(i["id"], i["name"], i["type"]) for i in listed] == [
        (s.id, s.name, s.type) for s in stored
    ]
    assert [datetime.fromisoformat(i["createTime"]) for i in listed] == [s.created for s in stored]


# -- PHP rules ------------------------------------------------------------------------------------


def test_parse_str() -> None:
    assert parse_str("a=1&b[]=x&b[]=y&c[k][]=z&d[5]=p&d[]=q&e") == {
        "a": "1",
        "b": {"0": "x", "1": "y"},
        "c": {"k": {"0": "z"}},
        "d": {"5": "p", "6": "q"},
        "e": "",
    }
    assert parse_str("a.b=1&c d=2&x[=3&=4&&f=%2B+g") == {
        "a_b": "1",
        "c_d": "2",
        "x_": "3",
        "f": "+ g",
    }
    assert parse_str("a=1&a[b]=2") == {"a": {"b": "2"}}
    assert parse_str("n[-3]=a&n[]=b") == {"n": {"-3": "a", "0": "b"}}
    assert parse_str("m[a]b=1") == {"m": {"a": "1"}}


def test_http_build_query_round_trip() -> None:
    params = {"fields": {"productId": 1, "ok": True}, "select": ["id", "name"], "n": None}
    query = http_build_query(params)
    assert query.startswith("fields%5BproductId%5D=1&fields%5Bok%5D=1&select%5B0%5D=id")
    assert parse_str(query) == {
        "fields": {"productId": "1", "ok": "1"},
        "select": {"0": "id", "1": "name"},
        "n": "",
    }
    assert http_build_query({"empty": {}, "also": []}) == ""


def test_php_scalars_and_arrays() -> None:
    assert [php_intval(v) for v in ("12abc", " -3", "x", 4.9, True, None, 7)] == [
        12,
        -3,
        0,
        4,
        1,
        0,
        7,
    ]
    assert php_values({"a": 1, "b": 2}) == [1, 2]
    assert php_values([3]) == [3]
    assert php_values("x") == []
    assert php_array({}) == []
    assert php_array({"0": "a", "1": "b"}) == ["a", "b"]
    assert php_array({"1": "a"}) == {"1": "a"}
    assert is_list_keys(["0", "1"])
    assert not is_list_keys(["1", "0"])


def test_canned_bodies_are_exported() -> None:
    assert INTERNAL_SERVER_ERROR == {
        "error": "INTERNAL_SERVER_ERROR",
        "error_description": "Internal server error",
    }
    assert json.dumps(INTERNAL_SERVER_ERROR)


# -- limits ----------------------------------------------------------------------------------------


async def test_bucket_burst_then_503(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakePortal(rate=2.0, burst=5, clock=clock) as portal:
        statuses = [
            (await call(session, hook(portal, LIST), {"productId": 1}))[0] for _ in range(7)
        ]
        assert statuses == [200] * 5 + [503] * 2
        status, body = await call(session, hook(portal, LIST), {"productId": 1})
        assert (status, body) == (
            503,
            {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
        )
        assert portal.counters.rate_limited == 3
        clock.advance(1.0)  # drains 2
        statuses = [
            (await call(session, hook(portal, LIST), {"productId": 1}))[0] for _ in range(3)
        ]
        assert statuses == [200, 200, 503]
        # A batch is one request, whatever it holds; downloads count too.
        clock.advance(2.5)
        cmd = {str(i): f"{LIST}?productId=1" for i in range(50)}
        assert (await call(session, hook(portal, "batch"), {"cmd": cmd}))[0] == 200
        assert portal.counters.by_status[503] == 4


async def test_bucket_paced_never_refuses(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakePortal(rate=2.0, burst=3, clock=clock) as portal:
        for _ in range(20):
            assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 200
            clock.advance(0.5)
        assert portal.counters.rate_limited == 0


async def test_bucket_disabled(session: aiohttp.ClientSession) -> None:
    async with FakePortal(rate=None, burst=1) as portal:
        for _ in range(5):
            assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 200


async def test_operating_limit(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakePortal(operating_cost=100.0, clock=clock) as portal:
        blocks = []
        for _ in range(5):
            status, body = await call(session, hook(portal, LIST), {"productId": 1})
            assert status == 200
            blocks.append(body["time"])
            clock.advance(1)
        assert [b["operating"] for b in blocks] == [100, 200, 300, 400, 500]
        assert {b["operating_reset_at"] for b in blocks} == {int(clock.now - 5 + 600)}
        status, body = await call(session, hook(portal, LIST), {"productId": 1})
        assert (status, body) == (
            429,
            {
                "error": "OPERATION_TIME_LIMIT",
                "error_description": "Method is blocked due to operation time limit.",
            },
        )
        # Other methods are not blocked; inside a batch the error is per command.
        status, body = await call(session, hook(portal, GET), {"productId": 1, "id": 1})
        assert status == 200
        cmd = {"l": f"{LIST}?productId=1", "g": f"{GET}?productId=1&id=1"}
        status, body = await call(session, hook(portal, "batch"), {"cmd": cmd})
        assert status == 200
        assert body["result"]["result_error"] == {"l": dict(body["result"]["result_error"]["l"])}
        assert body["result"]["result_error"]["l"]["error"] == "OPERATION_TIME_LIMIT"
        assert body["result"]["result_time"]["g"]["operating"] == 200
        assert body["time"]["operating"] == 0  # the outer batch books nothing
        clock.advance(600)
        assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 200


async def test_reset_limits(session: aiohttp.ClientSession) -> None:
    async with FakePortal(burst=1, operating_cost=480.0) as portal:
        assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 200
        assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 503
        portal.reset_limits()
        assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 200
        portal.reset_limits()
        assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 200
    async with FakePortal(rate=None, operating_limit=None) as portal:
        portal.reset_limits()  # nothing to reset


async def test_operating_cost_per_method(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakePortal(
        operating_cost={"CATALOG.productImage.get": 5.0},
        operating_limit=10.0,
        operating_window=60.0,
        clock=clock,
    ) as portal:
        _, body = await call(session, hook(portal, LIST), {"productId": 1})
        assert body["time"]["operating"] == 0
        for _ in range(2):
            _, body = await call(session, hook(portal, GET), {"productId": 1, "id": 1})
            clock.advance(7)  # a new basket every window/10 = 6 s
        assert body["time"]["operating"] == 10
        assert body["time"]["operating_reset_at"] == int(clock.now - 14 + 60)
        assert (await call(session, hook(portal, GET), {"productId": 1, "id": 1}))[0] == 429
        clock.advance(60 - 14)  # the first basket leaves the window
        assert (await call(session, hook(portal, GET), {"productId": 1, "id": 1}))[0] == 200


# -- faults ----------------------------------------------------------------------------------------


async def test_fault_error_and_html(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    from bitrix_images.testing import QUERY_LIMIT_EXCEEDED

    portal.inject("error", status=503, body=QUERY_LIMIT_EXCEEDED, times=2, method="batch")
    portal.inject("html", method=LIST)
    portal.inject("html", status=504)
    async with session.post(hook(portal, GET), json={"productId": 1, "id": 1}) as response:
        assert response.status == 504
    assert (await call(session, hook(portal, "batch"), {"cmd": {}})) == (503, QUERY_LIMIT_EXCEEDED)
    async with session.post(hook(portal, LIST), json={"productId": 1}) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
        assert "502 Bad Gateway" in await response.text()
    assert (await call(session, hook(portal, "batch"), {"cmd": {}}))[0] == 503
    assert (await call(session, hook(portal, "batch"), {"cmd": {}}))[0] == 200
    assert portal.counters.by_status == {504: 1, 503: 2, 502: 1, 200: 1}
    assert portal.counters.rate_limited == 0  # injected, not from the bucket


async def test_fault_validation(portal: FakePortal) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        portal.inject("explode")  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(ValueError, match="times"):
        portal.inject("html", times=0)
    with pytest.raises(ValueError, match="status and body"):
        portal.inject("error", status=500)
    portal.inject("html")
    portal.clear_faults()


async def test_fault_reset_changes_nothing(portal: FakePortal) -> None:
    portal.inject("reset", method=ADD)
    payload = {"fields": {"productId": 1}, "fileContent": ["a.png", PNG_B64]}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call(session, hook(portal, ADD), payload)
    assert portal.catalog.image_count() == 15
    assert portal.counters.by_method["catalog.productimage.add"] == 1
    assert sum(portal.counters.by_status.values()) == 0


async def test_fault_drop_applies_the_change(portal: FakePortal) -> None:
    portal.inject("drop", method="catalog.productImage.ADD")
    payload = {"fields": {"productId": 1}, "fileContent": ["a.png", PNG_B64]}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call(session, hook(portal, ADD), payload)
    assert portal.catalog.image_count() == 16


async def test_fault_delay(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    portal.inject("delay", delay=0.5)
    # aiohttp raises asyncio.TimeoutError: the builtin TimeoutError from Python 3.11 only.
    with pytest.raises(asyncio.TimeoutError):
        await call(
            session, hook(portal, LIST), {"productId": 1}, timeout=aiohttp.ClientTimeout(total=0.1)
        )
    portal.inject("delay", delay=0.05)
    assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 200


async def test_fault_delay_overlaps(portal: FakePortal) -> None:
    portal.inject("delay", delay=0.2, times=3)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(call(session, hook(portal, LIST), {"productId": 1}) for _ in range(3))
        )
    assert [status for status, _ in results] == [200, 200, 200]
    assert portal.counters.max_in_flight == 3


async def test_fault_truncated(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    portal.inject("truncated")
    async with session.post(hook(portal, LIST), json={"productId": 1}) as response:
        assert response.status == 200
        text = await response.text()
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        json.loads(text)
    assert text.startswith('{"result":{"productImages":[')


async def test_fault_cut_body(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    _, body = await call(session, hook(portal, LIST), {"productId": 1})
    link = body["result"]["productImages"][0]["downloadUrl"]
    portal.inject("cut_body", method="download")
    async with session.get(link) as response:
        assert response.headers["Content-Length"] == str(len(portal.catalog.images(1)[0].content))
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    async with session.get(link) as response:
        assert await response.read() == portal.catalog.images(1)[0].content


async def test_fault_command_error(portal: FakePortal, session: aiohttp.ClientSession) -> None:
    portal.inject("command_error", method=LIST, times=2)
    portal.inject("command_error", method=GET, body={"error": "X", "error_description": "y"})
    cmd = {str(i): f"{LIST}?productId={i + 1}" for i in range(3)}
    cmd["g"] = f"{GET}?productId=1&id=1"
    status, body = await call(session, hook(portal, "batch"), {"cmd": cmd})
    assert status == 200
    inner = body["result"]
    assert inner["result_error"] == {
        "0": INTERNAL_SERVER_ERROR,
        "1": INTERNAL_SERVER_ERROR,
        "g": {"error": "X", "error_description": "y"},
    }
    assert list(inner["result"]) == ["2"]
    # A plain (non-batch) call is not a command: the fault does not touch it.
    portal.inject("command_error")
    assert (await call(session, hook(portal, LIST), {"productId": 1}))[0] == 200
    _, body = await call(session, hook(portal, "batch"), {"cmd": [f"{LIST}?productId=1"]})
    assert body["result"]["result"] == []


async def test_faults_on_the_token_endpoint(
    portal: FakePortal, session: aiohttp.ClientSession
) -> None:
    portal.inject("html")  # method=None: REST requests only, not the OAuth server
    portal.inject("error", method="oauth.token", status=500, body=INTERNAL_SERVER_ERROR)
    portal.inject("delay", method="oauth.token", delay=0.01)
    query = {
        "grant_type": "refresh_token",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "refresh_token": portal.refresh_token,
    }
    assert (await get(session, portal.oauth_url.with_query(query)))[0] == 500
    assert (await get(session, portal.oauth_url.with_query(query)))[0] == 200
    assert portal.counters.refreshes == 1
