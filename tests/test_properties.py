"""Property tests (hypothesis): list_many over random catalogs under random fault schedules,
and the pure decoders over random valid and malformed answers.

Every property runs a fixed, derandomized set of examples without a database, so CI is
deterministic; the example counts are small enough for ``make test``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from support import examples, webhook_client
from yarl import URL

import bitrix_images as bx
from bitrix_images._wire import protocol as _protocol
from bitrix_images._wire.converters import Converter
from bitrix_images.testing import (
    INTERNAL_SERVER_ERROR,
    OVERLOAD_LIMIT,
    QUERY_LIMIT_EXCEEDED,
    FakePortal,
)

T = TypeVar("T")
ORIGIN = URL("https://example.bitrix24.com")
PATIENT = bx.RetryPolicy(max_attempts=8, initial_delay=0.0005, max_delay=0.002, max_wait=5.0)
FEW = settings(
    max_examples=examples(20),
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MANY = settings(
    max_examples=examples(120),
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# --- list_many under faults ------------------------------------------------------------------

RETRYABLE_WHOLE = [
    ("error", 503, QUERY_LIMIT_EXCEEDED),
    ("error", 503, OVERLOAD_LIMIT),
    ("error", 500, INTERNAL_SERVER_ERROR),
    ("html", 502, None),
    ("html", 504, None),
    ("reset", None, None),
    ("drop", None, None),
    ("truncated", None, None),
    ("cut_body", None, None),
]
RETRYABLE_COMMAND = [
    QUERY_LIMIT_EXCEEDED,
    OVERLOAD_LIMIT,
    INTERNAL_SERVER_ERROR,
    {"error": "ERROR_UNEXPECTED_ANSWER", "error_description": "Server returned an unexpected"},
]
FATAL_COMMAND = [
    {"error": "ACCESS_DENIED", "error_description": "Access denied."},
    {"error": 0, "error_description": "Product was not found"},
    {"error": "ERROR_ARGUMENT", "error_description": "Bad argument"},
]

# A fault: ("whole", index into RETRYABLE_WHOLE, times) or ("command", body, times).
whole_faults = st.tuples(
    st.just("whole"), st.integers(0, len(RETRYABLE_WHOLE) - 1), st.integers(1, 3)
)
command_faults = st.tuples(
    st.just("command"), st.sampled_from(RETRYABLE_COMMAND), st.integers(1, 3)
)


@st.composite
def catalogs(draw: st.DrawFn) -> dict[str, Any]:
    """Products with 0-300 images, some unreadable, listed in a random order with repeats."""
    sizes = draw(st.lists(st.integers(0, 300), min_size=1, max_size=6))
    order = draw(st.lists(st.integers(0, len(sizes) - 1), min_size=0, max_size=60))
    denied = draw(st.sets(st.integers(0, len(sizes) - 1), max_size=1))
    mode = draw(st.sampled_from(["source", "offset"]))
    return {"sizes": sizes, "order": order, "denied": denied, "mode": mode}


def _build(portal: FakePortal, catalog: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Create the products; return the requested product ids and the images in that order."""
    pids = [portal.catalog.add_product(images=size) for size in catalog["sizes"]]
    for index in catalog["denied"]:
        portal.catalog.deny_read(pids[index])
    requested = [pids[i] for i in catalog["order"]]
    return requested, [image.id for pid in requested for image in portal.catalog.images(pid)]


async def _consume(
    client: bx.BitrixClient, requested: list[int]
) -> tuple[list[bx.ProductImage], BaseException | None]:
    got: list[bx.ProductImage] = []
    try:
        async for image in client.images.list_many(requested):
            got.append(image)
    except Exception as exc:  # the properties below say which ones are allowed
        return got, exc
    return got, None


def _inject(portal: FakePortal, faults: list[tuple[str, Any, int]]) -> None:
    """Queue a fault schedule: whole batch requests, or single list commands inside them."""
    for where, what, times in faults:
        if where == "whole":
            kind, status, body = RETRYABLE_WHOLE[what]
            portal.inject(kind, times=times, method="batch", status=status, body=body)
        else:
            portal.inject(
                "command_error", times=times, method="catalog.productImage.list", body=what
            )


@FEW
@given(
    catalog=catalogs(),
    faults=st.lists(st.one_of(whole_faults, command_faults), max_size=3).filter(
        lambda faults: sum(times for _, _, times in faults) < PATIENT.max_attempts
    ),
)
async def test_list_many_is_exact_under_faults_within_the_budget(
    catalog: dict[str, Any], faults: list[tuple[str, Any, int]], secret_watch: Any
) -> None:
    """Retryable faults that fit the retry budget change nothing: every image exactly once,
    in order; an unreadable product ends the run with BatchError after every product
    before it."""
    async with FakePortal(products=0, rate=None, page_mode=catalog["mode"]) as portal:
        requested, expected = _build(portal, catalog)
        _inject(portal, faults)
        async with webhook_client(portal, retry=PATIENT) as client:
            got, error = await _consume(client, requested)
        secret_watch.check(error)
        ids = [image.id for image in got]
        denied = [i for i, index in enumerate(catalog["order"]) if index in catalog["denied"]]
        if not denied:
            assert error is None, repr(error)
            assert ids == expected
            return
        # Everything before the first unreadable product, and nothing from it on.
        first = requested[denied[0]]
        before = [
            image.id for pid in requested[: denied[0]] for image in portal.catalog.images(pid)
        ]
        assert isinstance(error, bx.BatchError), repr(error)
        assert ids == before
        assert any(isinstance(e, bx.AccessDenied) for e in error.errors.values())
        assert f"product {first}" in str(error)


@FEW
@given(
    catalog=catalogs(),
    faults=st.lists(
        st.one_of(
            st.tuples(
                st.just("whole"), st.integers(0, len(RETRYABLE_WHOLE) - 1), st.integers(1, 12)
            ),
            st.tuples(
                st.just("command"),
                st.sampled_from(RETRYABLE_COMMAND + FATAL_COMMAND),
                st.integers(1, 12),
            ),
        ),
        max_size=4,
    ),
)
async def test_list_many_is_exact_or_raises_a_named_error(
    catalog: dict[str, Any], faults: list[tuple[str, Any, int]], secret_watch: Any
) -> None:
    """Under any fault schedule: every image exactly once and in order, or a BitrixError
    after a prefix of whole products. Never a duplicate, a gap, or a foreign exception."""
    async with FakePortal(products=0, rate=None, page_mode=catalog["mode"]) as portal:
        requested, expected = _build(portal, catalog)
        _inject(portal, faults)
        async with webhook_client(portal, retry=PATIENT) as client:
            got, error = await _consume(client, requested)
        secret_watch.check(error)
        ids = [image.id for image in got]
        note(f"error={error!r}, {len(ids)} of {len(expected)} images")
        event("outcome", type(error).__name__ if error else "complete")
        if error is None:
            assert ids == expected
            return
        assert isinstance(error, bx.BitrixError), repr(error)
        assert ids == expected[: len(ids)]
        # The prefix ends on a product boundary: no product is yielded half-listed.
        boundaries = {0}
        total = 0
        for pid in requested:
            total += len(portal.catalog.images(pid))
            boundaries.add(total)
        assert len(ids) in boundaries


# --- the decoders: valid answers ---------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
counts = st.integers(0, 10**9)
time_blocks = st.fixed_dictionaries(
    {},
    optional={
        "start": st.floats(0, 2e9),
        "duration": st.floats(0, 100),
        "processing": st.floats(0, 100),
        "operating": st.floats(0, 480),
        "operating_reset_at": st.integers(0, 2**31),
    },
)


@MANY
@given(
    result=json_values,
    next_=st.none() | counts,
    total=st.none() | counts,
    time=st.none() | time_blocks,
    as_text=st.booleans(),
)
def test_valid_envelopes_decode(
    result: object, next_: int | None, total: int | None, time: Any, as_text: bool
) -> None:
    body: dict[str, object] = {"result": result}
    if next_ is not None:
        body["next"] = str(next_) if as_text else next_
    if total is not None:
        body["total"] = str(total) if as_text else total
    if time is not None:
        body["time"] = time
    envelope = _protocol.decode(200, orjson.dumps(body), method="m")
    assert envelope.result == result
    assert envelope.next == next_
    assert envelope.total == total
    if time is not None:
        assert envelope.time is not None
        assert envelope.time.operating == time.get("operating")


codes = st.one_of(
    st.sampled_from(["QUERY_LIMIT_EXCEEDED", "expired_token", "ACCESS_DENIED", "NOT_FOUND"]),
    st.integers(0, 2**40),
    st.text(min_size=1, max_size=20),
)


@MANY
@given(code=codes, description=st.text(max_size=40), status=st.integers(200, 599))
def test_error_envelopes_raise_their_code(code: str | int, description: str, status: int) -> None:
    body = orjson.dumps({"error": code, "error_description": description})
    with pytest.raises(bx.BitrixError) as info:
        _protocol.decode(status, body, method="m")
    assert info.value.code == code
    assert info.value.status == status
    assert info.value.method == "m"
    if description:
        assert info.value.description == description


def _command_answers() -> st.SearchStrategy[dict[str, Any]]:
    keys = st.lists(st.sampled_from([f"p{i}" for i in range(8)]), unique=True, max_size=8)
    return keys.flatmap(
        lambda ks: st.fixed_dictionaries(
            {
                "ok": st.just(ks[: len(ks) // 2]),
                "failed": st.just(ks[len(ks) // 2 :]),
                "results": st.lists(json_values, min_size=len(ks), max_size=len(ks)),
                "codes": st.lists(codes, min_size=len(ks), max_size=len(ks)),
                "nexts": st.lists(st.none() | counts, min_size=len(ks), max_size=len(ks)),
                "php_empty": st.booleans(),
            }
        )
    )


@MANY
@given(answer=_command_answers())
def test_valid_batch_answers_decode(answer: dict[str, Any]) -> None:
    ok, failed = answer["ok"], answer["failed"]
    results = dict(zip(ok, answer["results"], strict=False))
    errors = {
        key: {"error": code, "error_description": "x"}
        for key, code in zip(failed, answer["codes"], strict=False)
    }
    nexts = {k: n for k, n in zip(ok, answer["nexts"], strict=False) if n is not None}

    def php(mapping: dict[str, Any]) -> object:
        # PHP's json_encode sends an empty array as [] (batch.md).
        return [] if not mapping and answer["php_empty"] else mapping

    result = {
        "result": php(results),
        "result_error": php(errors),
        "result_total": php({}),
        "result_next": php(nexts),
        "result_time": php({}),
    }
    methods = dict.fromkeys(ok + failed, "catalog.productImage.list")
    decoded = _protocol.decode_batch(orjson.loads(orjson.dumps(result)), methods=methods)
    assert dict(decoded.results) == results
    assert dict(decoded.nexts) == nexts
    assert set(decoded.errors) == set(errors)
    for key, error in decoded.errors.items():
        assert error.code == errors[key]["error"]
        assert error.method == "catalog.productImage.list"


image_types = st.sampled_from(["DETAIL_PICTURE", "PREVIEW_PICTURE", "MORE_PHOTO"])
ids = st.integers(1, 2**31)
offsets = st.sampled_from(["+02:00", "+00:00", "-05:30", "Z"])


@st.composite
def wire_images(draw: st.DrawFn) -> dict[str, Any]:
    image_id = draw(ids)
    created = draw(st.datetimes(allow_imaginary=False)).replace(microsecond=0)
    name = draw(st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s))
    full = {
        "id": draw(st.sampled_from([image_id, str(image_id)])),
        "name": name,
        "productId": draw(ids),
        "type": draw(image_types),
        "createTime": created.isoformat() + draw(offsets),
        "downloadUrl": f"{ORIGIN}/rest/1/code/download/?token=catalog%7C{image_id}%7Csig",
        "detailUrl": f"/upload/iblock/abc/{image_id}/photo.png",
    }
    keep = draw(st.sets(st.sampled_from(sorted(full))))
    return {k: v for k, v in full.items() if k in keep or k == "id"}


@MANY
@given(wire=wire_images())
def test_valid_images_convert(wire: dict[str, Any]) -> None:
    image = Converter(ORIGIN).image(wire, method="m")
    assert image.id == int(wire["id"])
    assert image.name == wire.get("name")
    assert image.product_id == wire.get("productId")
    assert (image.type.value if image.type else None) == wire.get("type")
    if "createTime" in wire:
        assert image.create_time is not None
        assert image.create_time.utcoffset() is not None
    if "downloadUrl" in wire:
        assert str(image.download_url) == wire["downloadUrl"]  # the signed link byte for byte
    if "detailUrl" in wire:
        assert str(image.detail_url) == str(ORIGIN) + wire["detailUrl"]


# --- the decoders: malformed answers -----------------------------------------------------------


def _outcome(call: Callable[[], T]) -> tuple[T | None, bx.BitrixError | None]:
    """The value of *call*, or the BitrixError it raised (anything else propagates)."""
    try:
        return call(), None
    except bx.BitrixError as error:
        return None, error


malformed_bodies = st.one_of(
    st.binary(max_size=60),
    json_values.map(orjson.dumps),
    st.dictionaries(
        st.sampled_from(["result", "error", "error_description", "next", "total", "time"]),
        json_values,
    ).map(orjson.dumps),
)


@MANY
@given(body=malformed_bodies, status=st.integers(100, 599))
def test_malformed_envelopes_raise_only_bitrix_errors(body: bytes, status: int) -> None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    envelope, error = _outcome(lambda: _protocol.decode(status, body, method="m"))
    if error is not None:
        assert error.method == "m"
        assert str(error)
        return
    assert envelope is not None
    # Accepted only when it is a success answer with a result.
    assert isinstance(data, dict)
    assert "result" in data
    assert "error" not in data
    assert status < 300
    assert envelope.result == data["result"]


# Found by the property above: int(float("nan")) escaped decode() as ValueError (fixed in
# 590743e, "Treat a non-finite next or total as absent"); kept as a regression test.
@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["next", "total"])
def test_non_finite_next_or_total_is_malformed(field: str, value: str) -> None:
    body = orjson.dumps({"result": [], field: value})
    try:
        envelope = _protocol.decode(200, body, method="m")
    except bx.MalformedResponse:
        return
    assert getattr(envelope, field) is None


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_batch_next_is_malformed(value: str) -> None:
    try:
        decoded = _protocol.decode_batch({"result_next": {"p0": value}}, methods={})
    except bx.MalformedResponse:
        return
    assert "p0" not in decoded.nexts


@MANY
@given(
    result=json_values
    | st.dictionaries(
        st.sampled_from(["result", "result_error", "result_total", "result_next", "result_time"]),
        json_values | st.sampled_from(["nan", "inf", "1e999", "-1"]),
    )
)
def test_malformed_batch_results_raise_only_malformed_response(result: object) -> None:
    try:
        decoded = _protocol.decode_batch(result, methods={})
    except bx.MalformedResponse:
        return
    assert isinstance(result, dict)
    assert all(isinstance(e, bx.BitrixError) for e in decoded.errors.values())


mangled_images = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(
            ["id", "name", "productId", "type", "createTime", "downloadUrl", "detailUrl"]
        ),
        json_values
        | st.sampled_from(["", "-", "²", "12a", "2024-13-40T00:00:00", "http://[::1", "h:99999"]),
    ),
)


@MANY
@given(data=mangled_images)
@example(data={"id": "²"})
@example(data={"id": 1, "createTime": "2024-10-17T10:48:05"})
@example(data={"id": 1, "downloadUrl": "https://[::1]:99/rest/1/s3cretc0de/download/?token=x"})
def test_malformed_images_raise_only_malformed_response(data: object, secret_watch: Any) -> None:
    secret_watch.learn("s3cretc0de")
    image, error = _outcome(lambda: Converter(ORIGIN).image(data, method="m"))
    if error is not None:
        assert isinstance(error, bx.MalformedResponse)
        assert "malformed" in str(error) or "not an object" in str(error)
        secret_watch.check(error)
        return
    assert image is not None
    assert isinstance(data, dict)
    assert image.id == int(data["id"])
    secret_watch.check(image)  # repr() never raises, and never shows the signed link
    # The URLs are parsed when read: a bad one is a MalformedResponse then, nothing else.
    for read in (lambda: image.download_url, lambda: image.detail_url):
        _, late = _outcome(read)
        assert late is None or isinstance(late, bx.MalformedResponse)


@pytest.mark.parametrize(
    "url",
    [
        # Found by the property above: these gave an image whose repr() and download()
        # raised a bare ValueError (fixed in de5e406, "Build ProductImage's URLs when they
        # are read"); kept as regression tests.
        "http://[::1/rest/download/?token=x",
        "http://portal.example:99999/rest/download/?token=x",
        "/rest/download.json?token=x",  # joined to the portal origin, like detailUrl
    ],
)
def test_an_invalid_download_url_is_malformed(url: str) -> None:
    image, error = _outcome(
        lambda: Converter(ORIGIN).image({"id": 1, "downloadUrl": url}, method="m")
    )
    if error is not None:
        assert isinstance(error, bx.MalformedResponse)
        return
    assert image is not None
    assert "signed URL" in repr(image)
    read, late = _outcome(lambda: image.download_url)
    if late is not None:
        assert isinstance(late, bx.MalformedResponse)
        return
    assert read is not None
    assert read.is_absolute()


@MANY
@given(data=json_values)
def test_malformed_field_maps_raise_only_malformed_response(data: object) -> None:
    try:
        fields = Converter(ORIGIN).fields(data, method="m")
    except bx.MalformedResponse:
        return
    assert isinstance(data, dict)
    assert all(isinstance(info, bx.FieldInfo) for info in fields.values())


@MANY
@given(result=json_values)
def test_items_of_raises_only_malformed_response(result: object) -> None:
    try:
        items = _protocol.items_of(result, "productImages", method="m")
    except bx.MalformedResponse:
        return
    assert isinstance(items, list)
