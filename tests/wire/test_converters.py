"""The private converter: wire dicts to models, and clear errors for malformed ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timezone
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import examples
from yarl import URL

from bitrix_images._wire.converters import Converter, _image_builder, to_wire_name
from bitrix_images.exceptions import MalformedResponse
from bitrix_images.models import FieldInfo, ImageType, OAuthTokens, ProductImage

ORIGIN = URL("https://example.bitrix24.com")


@pytest.fixture(name="conv")
def _conv() -> Converter:
    return Converter(ORIGIN)


def test_unknown_keys_are_ignored(conv: Converter) -> None:
    image = conv.image({"id": 7, "brandNewKey": {"x": 1}}, method="m")
    assert image == ProductImage(id=7)


def test_left_out_fields_are_none(conv: Converter) -> None:
    image = conv.image({"id": "7", "name": 12, "detailUrl": "", "type": None}, method="m")
    assert image == ProductImage(id=7, name="12")


def test_detail_url_is_joined_and_absolute_urls_stay(conv: Converter) -> None:
    relative = conv.image({"id": 1, "detailUrl": "/upload/a.png"}, method="m")
    assert relative.detail_url == URL("https://example.bitrix24.com/upload/a.png")
    cdn = conv.image({"id": 1, "detailUrl": "https://cdn.example.net/a.png"}, method="m")
    assert cdn.detail_url == URL("https://cdn.example.net/a.png")


def test_z_suffix_and_offsets(conv: Converter) -> None:
    image = conv.image({"id": 1, "createTime": "2024-10-17T10:48:05Z"}, method="m")
    assert image.create_time is not None
    assert image.create_time.tzinfo is not None
    assert image.create_time.utcoffset() == timezone.utc.utcoffset(None)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "x"}, "id"),
        ({"id": "x1"}, "id"),
        ({"id": True}, "id"),
        ({"id": 1.5}, "id"),
        ({"id": 1, "type": "BOGUS"}, "type"),
        ({"id": 1, "createTime": "2024-10-17T10:48:05"}, "create_time"),
        ({"id": 1, "createTime": 5}, "create_time"),
        ({"id": 1, "downloadUrl": 5}, "download_url"),
        ({"id": 1, "name": ["x"]}, "name"),
        ({"id": 1, "productId": "abc"}, "product_id"),
    ],
)
def test_malformed_images_name_the_field(
    conv: Converter, data: dict[str, object], field: str
) -> None:
    with pytest.raises(MalformedResponse) as info:
        conv.image(data, method="catalog.productImage.list")
    assert field in str(info.value)
    assert info.value.method == "catalog.productImage.list"


def test_an_image_that_is_not_an_object(conv: Converter) -> None:
    with pytest.raises(MalformedResponse, match="not an object"):
        conv.image([1], method="m")


def test_fields_from_the_docs(conv: Converter) -> None:
    body = json.loads((Path(__file__).parent.parent / "samples" / "getfields_200.json").read_text())
    fields = conv.fields(body["result"]["productImage"], method="m")
    assert fields["productId"] == FieldInfo(type="string", is_required=True)
    assert fields["id"] == FieldInfo(type="integer", is_read_only=True)
    assert set(fields) == {
        "createTime",
        "detailUrl",
        "downloadUrl",
        "id",
        "name",
        "productId",
        "type",
    }


def test_fields_accept_y_n_and_refuse_junk(conv: Converter) -> None:
    fields = conv.fields({"x": {"type": "string", "isRequired": "Y"}}, method="m")
    assert fields["x"].is_required is True
    with pytest.raises(MalformedResponse, match=r"isRequired|is_required"):
        conv.fields({"x": {"type": "string", "isRequired": "maybe"}}, method="m")
    with pytest.raises(MalformedResponse, match="type"):
        conv.fields({"x": {"isRequired": True}}, method="m")
    with pytest.raises(MalformedResponse):
        conv.fields(["x"], method="m")


def test_reprs_hide_secrets() -> None:
    image = ProductImage(
        id=1, download_url=URL("https://p.example/rest/1/SECRETCODE/download/?token=SIG")
    )
    assert "SECRETCODE" not in repr(image)
    assert "SIG" not in repr(image)
    assert "p.example" in repr(image)
    assert "None" in repr(ProductImage(id=2))
    from datetime import datetime

    tokens = OAuthTokens(
        "ACCESS", "REFRESH", datetime.now(timezone.utc), URL("https://p.example/rest/")
    )
    assert "ACCESS" not in repr(tokens)
    assert "REFRESH" not in repr(tokens)


def test_wire_names() -> None:
    assert to_wire_name("product_id") == "productId"
    assert to_wire_name("productId") == "productId"
    assert to_wire_name("id") == "id"
    assert ImageType("MORE_PHOTO") is ImageType.MORE_PHOTO


def test_urls_are_built_when_read() -> None:
    conv = Converter(ORIGIN)
    image = conv.image(
        {
            "id": 1,
            "downloadUrl": "https://x.example/rest/1/c/download/?token=a%2Fb",
            "detailUrl": "/u/a.png",
        },
        method="m",
    )
    assert image.download_url == URL(
        "https://x.example/rest/1/c/download/?token=a%2Fb", encoded=True
    )
    assert image.detail_url == URL("https://example.bitrix24.com/u/a.png")
    assert image == conv.image(
        {
            "id": 1,
            "downloadUrl": "https://x.example/rest/1/c/download/?token=a%2Fb",
            "detailUrl": "/u/a.png",
        },
        method="m",
    )
    # Users may build images with URL values or text.
    built = ProductImage(
        id=1, download_url=URL("https://x.example/a"), detail_url="https://x.example/b"
    )
    assert built.download_url == URL("https://x.example/a")
    assert built.detail_url == URL("https://x.example/b")
    with pytest.raises(TypeError):
        ProductImage(id=1, download_url=5)  # type: ignore[arg-type]


def test_a_malformed_url_is_malformed_response_when_read() -> None:
    image = Converter(ORIGIN).image(
        {"id": 1, "downloadUrl": "http://[broken/x?token=s3cret"}, method="m"
    )
    with pytest.raises(MalformedResponse, match="downloadUrl") as info:
        _ = image.download_url
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(image)
    assert "[broken" in repr(image)
    cdn = Converter(ORIGIN).image({"id": 1, "detailUrl": "relative/x.png"}, method="m")
    assert cdn.detail_url == URL("https://example.bitrix24.com/relative/x.png")
    assert "user@" not in repr(ProductImage(id=1, download_url="https://user@h.example/x"))


# --- the fast structure function and the detailed path ------------------------------------


SAMPLES = Path(__file__).parent.parent / "samples"
PROPERTY = settings(
    max_examples=examples(300),
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

junk = st.none() | st.booleans() | st.floats(allow_nan=False) | st.lists(st.integers(), max_size=2)
# What a portal sends (the fast function's own ground) ...
VALID = {
    "id": st.integers(-(2**63), 2**63) | st.from_regex(r"-?[0-9]{1,6}", fullmatch=True),
    "name": st.text(max_size=12) | st.none(),
    "productId": st.integers(0, 2**31) | st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    "type": st.sampled_from([m.value for m in ImageType]) | st.none(),
    "createTime": (
        st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat())
        | st.datetimes().map(lambda t: t.isoformat(timespec="seconds") + "Z")
        | st.none()
    ),
    "downloadUrl": st.sampled_from(
        [
            "https://example.bitrix24.com/rest/1/c/download/?token=a%2Fb",
            "/rest/download.json?token=x%7Cy",
            "",
        ]
    )
    | st.none(),
    "detailUrl": st.sampled_from(
        [
            "/upload/iblock/6f1/x.jpeg",
            "http://cdn.example.net/upload/x.png",
            "HTTPS://Example.Bitrix24.com:443/u/x.png",
            "//cdn.example.net/x.png",
            "relative/x.png",
            "",
        ]
    )
    | st.none(),
}
# ... and what a broken or hostile one may send instead.
ODD = {
    "id": junk | st.text(max_size=4),
    "name": st.integers() | junk,
    "productId": junk | st.text(max_size=4),
    "type": st.sampled_from(["", "more_photo", "BOGUS"]) | junk,
    "createTime": (
        st.datetimes().map(lambda t: t.isoformat())  # no offset
        | st.sampled_from(["2024-13-01T00:00:00+00:00", "", "now"])
        | junk
    ),
    "downloadUrl": st.sampled_from(
        [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "data:image/png;base64,AAAA",
            "ftp://example.bitrix24.com/x.png",
            "http://[::1/x",
            "http://portal.example:99999/x",
            "https://",
            "?token=x",
        ]
    )
    | st.text(max_size=10)
    | junk,
}
ODD["detailUrl"] = ODD["downloadUrl"]
WIRE = {key: VALID[key] | ODD[key] for key in VALID}
OPTIONAL = [key for key in VALID if key != "id"]
valid_dicts = st.fixed_dictionaries(
    {"id": VALID["id"]}, optional={key: VALID[key] for key in OPTIONAL}
)
image_dicts = (
    valid_dicts
    | st.fixed_dictionaries(
        {"id": WIRE["id"]}, optional={"extra": st.integers(), **{k: WIRE[k] for k in OPTIONAL}}
    )
    | st.fixed_dictionaries({}, optional=WIRE)
)


def _same(left: ProductImage, right: ProductImage) -> None:
    """Equal field by field, types and UTC offsets and URL texts included."""
    assert left == right
    for field in ("id", "name", "product_id", "type", "create_time"):
        assert type(getattr(left, field)) is type(getattr(right, field)), field
    if left.create_time is not None:
        assert right.create_time is not None
        assert left.create_time.utcoffset() == right.create_time.utcoffset()
    assert left._download_url == right._download_url
    assert left._detail_url == right._detail_url


def _outcome(call: Callable[[], ProductImage]) -> ProductImage | Exception:
    try:
        return call()
    except Exception as exc:  # compared below: what each path raises is the point
        return exc


@PROPERTY
@given(data=image_dicts)
@example(data={"id": 1, "createTime": "2024-10-17T10:48:05Z"})
@example(data={"id": "7", "name": 12, "detailUrl": "", "type": None})
def test_fast_and_detailed_paths_agree(data: dict[str, object]) -> None:
    conv = Converter(ORIGIN)
    fast = _outcome(lambda: _image_builder(ORIGIN)([data])[0])
    detailed = _outcome(lambda: conv.structure(data, ProductImage, what="productImage", method="m"))
    public = _outcome(lambda: conv.image(data, method="m"))
    listed = _outcome(lambda: conv.images([data], method="m")[0])
    if isinstance(fast, ProductImage):
        # What the fast function accepts, the detailed path gives too, field for field.
        assert isinstance(detailed, ProductImage), detailed
        _same(fast, detailed)
    if isinstance(detailed, ProductImage):
        assert isinstance(public, ProductImage)
        assert isinstance(listed, ProductImage)
        _same(public, detailed)
        _same(listed, detailed)
    else:
        # Bad data: MalformedResponse naming a field, never a bare exception.
        assert isinstance(detailed, MalformedResponse), detailed
        for got in (public, listed):
            assert isinstance(got, MalformedResponse)
            assert str(got) == str(detailed)
            assert got.method == "m"


def _has_field_name(message: str) -> bool:
    return any(name in message for name in (*WIRE, "product_id", "create_time", "download_url"))


@PROPERTY
@given(data=st.fixed_dictionaries(WIRE))
def test_malformed_images_name_a_field(data: dict[str, object]) -> None:
    got = _outcome(lambda: Converter(ORIGIN).image(data, method="m"))
    if not isinstance(got, ProductImage):
        assert isinstance(got, MalformedResponse)
        assert _has_field_name(str(got)), str(got)
        return
    image = got
    # Valid: each field has its documented type.
    assert type(image.id) is int
    assert image.create_time is None or image.create_time.tzinfo is not None
    for read in (lambda: image.detail_url, lambda: image.download_url):
        try:
            url = read()
        except MalformedResponse:
            continue
        assert url is None or (url.scheme in ("http", "https") and url.host)


def test_a_bad_image_in_a_list_names_its_field_and_method() -> None:
    conv = Converter(ORIGIN)
    good = {"id": 1, "name": "a.png"}
    with pytest.raises(MalformedResponse, match=r"createTime|create_time") as info:
        conv.images([good, {"id": 2, "createTime": "yesterday"}, good], method="list")
    assert info.value.method == "list"
    with pytest.raises(MalformedResponse, match="not an object"):
        conv.images([good, "x"], method="list")
    # A generator is read once, and an empty answer is an empty list.
    assert (
        conv.images((item for item in [good, good]), method="m")
        == [ProductImage(id=1, name="a.png")] * 2
    )
    assert conv.images([], method="m") == []


def test_a_mapping_that_is_no_dict_takes_the_detailed_path() -> None:
    conv = Converter(ORIGIN)
    data = MappingProxyType({"id": 3, "type": "MORE_PHOTO", "detailUrl": "/u/x.png"})
    expected = ProductImage(
        id=3, type=ImageType.MORE_PHOTO, detail_url="https://example.bitrix24.com/u/x.png"
    )
    assert conv.images([data], method="m") == [expected]
    assert conv.image(data, method="m") == expected


def test_the_detailed_converter_is_built_only_when_needed() -> None:
    conv = Converter(ORIGIN)
    body = json.loads((SAMPLES / "list_200.json").read_text())
    conv.images(body["result"]["productImages"], method="m")
    assert conv._detailed_converter is None
    with pytest.raises(MalformedResponse):
        conv.image({"id": "x"}, method="m")
    assert conv._detailed_converter is not None


def test_the_recorded_answer_keeps_its_urls_byte_for_byte() -> None:
    raw = (SAMPLES / "list_200.json").read_text()
    sent = json.loads(raw)["result"]["productImages"][0]
    conv = Converter(URL("http://dev.bx"))
    (image,) = conv.images([sent], method="m")
    _same(image, conv.structure(sent, ProductImage, what="productImage", method="m"))
    assert image.download_url is not None
    assert str(image.download_url) == sent["downloadUrl"]
    assert "%2FZL%2FkQI4%3D" in str(image.download_url)  # never requoted
    assert str(image.detail_url) == "http://dev.bx" + sent["detailUrl"]
    assert image.create_time is not None
    assert image.create_time.utcoffset() is not None
    assert image.type is ImageType.MORE_PHOTO


# --- detailUrl and downloadUrl: only http(s) links (issue 13) -----------------------------


@pytest.mark.parametrize(
    "sent",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        "ftp://example.bitrix24.com/x.png",
        "mailto:a@b.example",
        "https://",
        "http://[::1/x",  # kept as sent: a malformed http(s) link, an error when read
        "//[::1/x",  # no URL at all (yarl refuses it)
        "//cdn.example.net:99999/x.png",
        "",
    ],
)
def test_a_detail_url_that_is_no_web_link_is_none(sent: str) -> None:
    conv = Converter(ORIGIN)
    (image,) = conv.images([{"id": 1, "detailUrl": sent}], method="m")
    if sent.startswith(("http://", "https://")):
        # Kept as sent (the fast check is a prefix); reading it says it is malformed.
        with pytest.raises(MalformedResponse, match="detailUrl"):
            _ = image.detail_url
    else:
        assert image.detail_url is None
    _same(image, conv.structure({"id": 1, "detailUrl": sent}, ProductImage, what="p", method="m"))


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ("/upload/a.png", "https://example.bitrix24.com/upload/a.png"),
        ("upload/a.png", "https://example.bitrix24.com/upload/a.png"),
        ("//cdn.example.net/a.png", "https://cdn.example.net/a.png"),
        ("http://cdn.example.net/a.png", "http://cdn.example.net/a.png"),
        ("HTTPS://CDN.example.net:443/a%2Fb.png", "HTTPS://CDN.example.net:443/a%2Fb.png"),
    ],
)
def test_detail_urls_are_absolute_web_links_on_any_host(sent: str, read: str) -> None:
    (image,) = Converter(ORIGIN).images([{"id": 1, "detailUrl": sent}], method="m")
    assert image._detail_url == read  # the text, exactly
    assert image.detail_url is not None
    assert image.detail_url.scheme in ("http", "https")


@pytest.mark.parametrize(
    "sent",
    [
        "javascript:alert('SECRETSIG')",
        "file:///etc/SECRETSIG",
        "data:text/plain,SECRETSIG",
        "ftp://example.bitrix24.com/rest/download/?token=SECRETSIG",
        "http://[::1/rest/download/?token=SECRETSIG",
    ],
)
def test_a_download_url_that_is_no_web_link_fails_that_image_only(sent: str) -> None:
    conv = Converter(ORIGIN)
    images = conv.images([{"id": 1, "downloadUrl": sent}, {"id": 2}], method="m")
    assert [image.id for image in images] == [1, 2]
    with pytest.raises(MalformedResponse, match="downloadUrl") as info:
        _ = images[0].download_url
    assert "SECRETSIG" not in str(info.value)
    assert "SECRETSIG" not in repr(images[0])


def test_a_relative_download_url_joins_the_portal() -> None:
    (image,) = Converter(ORIGIN).images(
        [{"id": 1, "downloadUrl": "/rest/download.json?token=a%2Fb"}], method="m"
    )
    assert str(image.download_url) == "https://example.bitrix24.com/rest/download.json?token=a%2Fb"


def test_user_built_images_keep_the_same_link_rule() -> None:
    image = ProductImage(id=1, download_url="file:///etc/passwd", detail_url="mailto:x@y.example")
    with pytest.raises(MalformedResponse, match="downloadUrl"):
        _ = image.download_url
    with pytest.raises(MalformedResponse, match="detailUrl"):
        _ = image.detail_url


@PROPERTY
@given(data=valid_dicts)
def test_what_a_portal_sends_never_needs_the_detailed_path(data: dict[str, object]) -> None:
    # The fast function handles every portal-shaped image itself (no fallback cost).
    (image,) = _image_builder(ORIGIN)([data])
    assert image.id == int(data["id"])  # type: ignore[call-overload]
