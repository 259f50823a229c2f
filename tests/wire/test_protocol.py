"""The pure protocol layer, driven by recorded envelopes: no event loop, no network."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from yarl import URL

from bitrix_images._wire import protocol as p
from bitrix_images._wire.converters import Converter
from bitrix_images.exceptions import (
    AccessDenied,
    AuthError,
    BitrixError,
    InvalidRequest,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
)
from bitrix_images.models import ImageType, ProductImage

SAMPLES = Path(__file__).parent.parent / "samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


class TestDecode:
    def test_list_success_from_the_docs(self) -> None:
        envelope = p.decode(200, sample("list_200.json"), method="catalog.productImage.list")
        assert envelope.total == 1
        assert envelope.next is None
        assert envelope.time is not None
        assert envelope.time.duration == pytest.approx(0.535667896270752)
        assert envelope.time.operating is None
        items = p.items_of(envelope.result, "productImages", method="m")
        image = Converter(URL("http://dev.bx")).image(items[0], method="m")
        assert image == ProductImage(
            id=1,
            name="test.jpeg",
            product_id=1,
            type=ImageType.MORE_PHOTO,
            create_time=datetime(2024, 10, 17, 10, 48, 5, tzinfo=timezone(timedelta(hours=2))),
            download_url=URL(items[0]["downloadUrl"], encoded=True),
            detail_url=URL(
                "http://dev.bx/upload/iblock/6f1/bkm7jmwso31wisk423gtp28iagy2e8v0/test.jpeg"
            ),
        )

    def test_signed_url_is_kept_byte_for_byte(self) -> None:
        envelope = p.decode(200, sample("list_200.json"), method="m")
        raw = p.items_of(envelope.result, "productImages", method="m")[0]["downloadUrl"]
        image = Converter(URL("http://dev.bx")).image({"id": 1, "downloadUrl": raw}, method="m")
        # docs: never change the signed link; %2F must not become / in the token.
        assert str(image.download_url) == raw
        assert "%2F" in str(image.download_url)
        odd = Converter(URL("http://dev.bx")).image(
            {"id": 1, "downloadUrl": "http://dev.bx/a b/ф"}, method="m"
        )
        assert odd.download_url == URL("http://dev.bx/a b/ф")

    def test_integer_error_code_is_kept_as_int(self) -> None:
        with pytest.raises(AccessDenied) as info:
            p.decode(400, sample("list_400.json"), method="catalog.productImage.list")
        assert info.value.code == 200040300010
        assert info.value.status == 400
        assert info.value.description == "Access denied"
        assert info.value.method == "catalog.productImage.list"

    def test_error_code_zero_is_an_error(self) -> None:
        body = b'{"error": 0, "error_description": "Product was not found"}'
        with pytest.raises(NotFound) as info:
            p.decode(400, body, method="catalog.productImage.list")
        assert info.value.code == 0

    def test_error_with_http_200_is_an_error(self) -> None:
        with pytest.raises(BitrixError) as info:
            p.decode(200, b'{"error": 0, "error_description": "Could not save image."}', method="m")
        assert type(info.value) is BitrixError
        assert info.value.code == 0

    def test_time_block_with_operating(self) -> None:
        envelope = p.decode(200, sample("time_block.json"), method="m")
        assert envelope.result is True
        assert envelope.time == p.TimeInfo(
            duration=0.694180965423584,
            processing=0.6726489067077637,
            operating=0.6726338863372803,
            operating_reset_at=1757425271.0,
            finish=1757424672.203906,
        )

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
            (200, b'{"result": {"productImages": ['),
            (200, b""),
            (200, b"\xff\xfe"),
        ],
    )
    def test_non_json_is_a_transport_error_keeping_the_status(
        self, status: int, body: bytes
    ) -> None:
        with pytest.raises(TransportError) as info:
            p.decode(status, body, method="batch")
        assert info.value.status == status
        assert p.retry_kind(info.value) is p.Retry.TRANSIENT

    @pytest.mark.parametrize(
        ("status", "cls"),
        [
            (401, AuthError),
            (403, AccessDenied),
            (404, NotFound),
            (503, RateLimited),
            (500, ServerError),
            (418, BitrixError),
        ],
    )
    def test_status_fallback_when_the_body_says_nothing(self, status: int, cls: type) -> None:
        with pytest.raises(cls) as info:
            p.decode(status, b"{}", method="m")
        assert type(info.value) is cls
        assert info.value.code is None

    def test_success_without_result_is_malformed(self) -> None:
        with pytest.raises(MalformedResponse):
            p.decode(200, b'{"time": {}}', method="m")
        with pytest.raises(MalformedResponse):
            p.decode(200, b"[1, 2]", method="m")

    def test_next_and_total_are_read(self) -> None:
        envelope = p.decode(
            200, b'{"result": [], "next": 50, "total": "237", "time": "bogus"}', method="m"
        )
        assert (envelope.next, envelope.total, envelope.time) == (50, 237, None)

    @pytest.mark.parametrize("value", ['"nan"', '"inf"', '"1e999"', '"-Infinity"'])
    def test_non_finite_numbers_are_ignored(self, value: str) -> None:
        body = f'{{"result": 1, "next": {value}, "total": {value}}}'.encode()
        envelope = p.decode(200, body, method="m")
        assert (envelope.next, envelope.total) == (None, None)

    def test_garbage_numbers_are_ignored(self) -> None:
        envelope = p.decode(200, b'{"result": 1, "next": "x", "total": true}', method="m")
        assert (envelope.next, envelope.total) == (None, None)


class TestClassify:
    @pytest.mark.parametrize(
        ("code", "cls"),
        [
            ("QUERY_LIMIT_EXCEEDED", RateLimited),
            ("query_limit_exceeded", RateLimited),
            ("OPERATION_TIME_LIMIT", RateLimited),
            ("OVERLOAD_LIMIT", RateLimited),
            ("expired_token", AuthError),
            ("INVALID_CREDENTIALS", AuthError),
            ("insufficient_scope", AuthError),
            (200040300010, AccessDenied),
            ("200040300020", AccessDenied),
            ("ACCESS_DENIED", AccessDenied),
            ("user_access_error", AccessDenied),
            (100, InvalidRequest),
            ("ERROR_METHOD_NOT_FOUND", InvalidRequest),
            ("INTERNAL_SERVER_ERROR", ServerError),
            ("NOT_FOUND", NotFound),
            ("SOMETHING_NEW", BitrixError),
        ],
    )
    def test_by_code(self, code: object, cls: type) -> None:
        error = p.classify(code, "text", 400, "m")
        assert type(error) is cls
        assert error.code == code

    def test_code_zero_not_found_texts(self) -> None:
        assert type(p.classify(0, "Image does not exist", 400, "m")) is NotFound
        assert type(p.classify(0, "Product was not found", 400, "m")) is NotFound
        assert type(p.classify(0, "Empty productID", 400, "m")) is BitrixError

    def test_odd_code_types_are_stringified(self) -> None:
        error = p.classify(["x"], None, None, None)
        assert error.code == "['x']"
        assert error.description == "the portal refused"

    def test_nothing_at_all(self) -> None:
        error = p.classify(None, None, None, None)
        assert type(error) is BitrixError

    def test_message_has_method_code_status(self) -> None:
        error = p.classify(200040300010, "Access denied", 400, "catalog.productImage.list")
        error.attempts = 3
        text = str(error)
        assert "Access denied" in text
        assert "catalog.productImage.list" in text
        assert "200040300010" in text
        assert "HTTP 400" in text
        assert "3 attempts" in text
        assert "AccessDenied(" in repr(error)
        assert str(BitrixError("plain")) == "plain"


class TestRetryKind:
    @pytest.mark.parametrize(
        ("error", "kind"),
        [
            (p.classify("QUERY_LIMIT_EXCEEDED", "", 503, "m"), p.Retry.BACKOFF),
            (p.classify("OVERLOAD_LIMIT", "", 503, "m"), p.Retry.BACKOFF),
            (p.classify("OPERATION_TIME_LIMIT", "", 429, "m"), p.Retry.WAIT_RESET),
            (p.classify("expired_token", "", 401, "m"), p.Retry.REFRESH),
            (p.classify("invalid_token", "", 401, "m"), p.Retry.REFRESH),
            (p.classify("INTERNAL_SERVER_ERROR", "", 500, "m"), p.Retry.TRANSIENT),
            (p.classify(None, None, 504, "m"), p.Retry.TRANSIENT),
            (p.classify(None, None, 503, "m"), p.Retry.TRANSIENT),
            (ServerError("x", status=501), p.Retry.NEVER),
            (p.classify(0, "Product was not found", 400, "m"), p.Retry.NEVER),
            (p.classify("INVALID_CREDENTIALS", "", 401, "m"), p.Retry.NEVER),
            (TransportError("x"), p.Retry.TRANSIENT),
        ],
    )
    def test_kinds(self, error: BitrixError, kind: p.Retry) -> None:
        assert p.retry_kind(error) is kind


def test_idempotency_by_method_name() -> None:
    for method in (
        "catalog.productImage.list",
        "catalog.productImage.get",
        "catalog.productImage.getFields",
        "user.current.get",
        "crm.deal.getlist",
    ):
        assert p.is_idempotent(method), method
    for method in (
        "catalog.productImage.add",
        "catalog.productImage.delete",
        "crm.deal.update",
        "batch",
    ):
        assert not p.is_idempotent(method), method


class TestBatch:
    def test_http_build_query_matches_php(self) -> None:
        query = p.http_build_query(
            {
                "productId": 5,
                "select": ["id", "name"],
                "fields": {"a": True, "b": False, "c": None},
                "q": "a b&c",
            }
        )
        assert query == (
            "productId=5&select%5B0%5D=id&select%5B1%5D=name&fields%5Ba%5D=1&fields%5Bb%5D=0&q=a+b%26c"
        )
        assert parse_qs(query)["select[0]"] == ["id"]

    def test_encode(self) -> None:
        params = p.encode_batch(
            {"a": ("catalog.productImage.list", {"productId": 1}), "b": ("user.current", {})},
            halt=True,
        )
        assert params == {
            "halt": 1,
            "cmd": {"a": "catalog.productImage.list?productId=1", "b": "user.current"},
        }

    def test_encode_refuses_more_than_50(self) -> None:
        with pytest.raises(ValueError, match="50"):
            p.encode_batch({str(i): ("m", {}) for i in range(51)})

    def test_per_command_errors_from_the_docs(self) -> None:
        envelope = p.decode(200, sample("batch_scope_errors_200.json"), method="batch")
        result = p.decode_batch(envelope.result, methods={"get_user": "user.current"})
        assert result.results == {}
        assert set(result.errors) == {"get_user", "get_department"}
        assert isinstance(result.errors["get_user"], AuthError)
        assert result.errors["get_user"].method == "user.current"
        assert result.errors["get_department"].method is None

    def test_operating_limit_inside_batch(self) -> None:
        envelope = p.decode(200, sample("batch_operating_200.json"), method="batch")
        assert envelope.time is not None
        assert envelope.time.operating_reset_at == 1681568878
        result = p.decode_batch(envelope.result, methods={})
        (error,) = result.errors.values()
        assert p.retry_kind(error) is p.Retry.WAIT_RESET

    def test_php_list_quirks(self) -> None:
        result = p.decode_batch(
            {
                "result": [{"productImages": []}, {"productImages": [{"id": 1}]}],
                "result_error": [],
                "result_total": [0, "1"],
                "result_next": {"1": 50, "0": None},
                "result_time": [{"operating": 1.5}, "bad"],
            },
            methods={"0": "m", "1": "m"},
        )
        assert result.results["1"] == {"productImages": [{"id": 1}]}
        assert result.totals == {"0": 0, "1": 1}
        assert result.nexts == {"1": 50}
        assert result.times == {}  # the method's last entry is unreadable: nothing booked

    def test_result_time_is_read_once_per_method(self) -> None:
        result = p.decode_batch(
            {
                "result": {},
                "result_time": {
                    "a": {"operating": 1.0},
                    "b": {"operating": 7.0},
                    "c": {"operating": 2.0, "operating_reset_at": 1700000000},
                    "x": {"operating": 9.0},
                },
            },
            methods={"a": "m", "b": "n", "c": "m"},
        )
        assert result.times == {
            "m": p.TimeInfo(operating=2.0, operating_reset_at=1700000000.0),
            "n": p.TimeInfo(operating=7.0),
        }

    def test_error_without_body_shape(self) -> None:
        result = p.decode_batch({"result_error": {"k": "boom"}}, methods={"k": "m"})
        assert type(result.errors["k"]) is BitrixError

    @pytest.mark.parametrize("bad", ["x", {"result": "x"}])
    def test_malformed(self, bad: object) -> None:
        with pytest.raises(MalformedResponse):
            p.decode_batch(bad, methods={})


class TestItemsOf:
    def test_shapes(self) -> None:
        assert p.items_of({"productImages": [1]}, "productImages", method="m") == [1]
        assert p.items_of({"productImages": {"0": 1, "1": 2}}, "productImages", method="m") == [
            1,
            2,
        ]
        assert p.items_of([3], "productImages", method="m") == [3]

    @pytest.mark.parametrize("bad", [{"other": []}, "x", None, {"productImages": 5}])
    def test_missing(self, bad: object) -> None:
        with pytest.raises(MalformedResponse, match="productImages"):
            p.items_of(bad, "productImages", method="m")


def test_dumps_is_compact_utf8() -> None:
    assert p.dumps({"a": "é", "b": [1]}) == '{"a":"é","b":[1]}'.encode()
    assert json.loads(p.dumps({"x": 1})) == {"x": 1}
