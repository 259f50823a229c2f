"""The private converter: wire dicts to models, and clear errors for malformed ones."""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path

import pytest
from yarl import URL

from bitrix_images._converters import Converter, to_wire_name
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
    body = json.loads((Path(__file__).parent / "samples" / "getfields_200.json").read_text())
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
