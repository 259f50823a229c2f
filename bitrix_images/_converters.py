"""
The private cattrs converter: camelCase wire dicts to the frozen models in ``models``.

Serialization lives here, out of the models (the cattrs way). Each client builds one
converter bound to its portal's origin, because ``detailUrl`` arrives as a path relative
to it (catalog-product-image-list.md example: ``"/upload/iblock/6f1/.../test.jpeg"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, TypeVar

import cattrs
from cattrs.gen import make_dict_structure_fn, override
from yarl import URL

from .exceptions import MalformedResponse
from .models import FieldInfo, ImageType, ProductImage, as_url

T = TypeVar("T")

_CAMEL = {
    "product_id": "productId",
    "create_time": "createTime",
    "download_url": "downloadUrl",
    "detail_url": "detailUrl",
    "is_required": "isRequired",
    "is_read_only": "isReadOnly",
    "is_immutable": "isImmutable",
}

# The wire names ``select`` accepts, in ProductImage's field order.
SELECTABLE = ("id", "name", "productId", "type", "createTime", "downloadUrl", "detailUrl")


def _parse_datetime(value: object, _: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError("expected an ISO-8601 string")
    # PHP's date('c') gives +02:00; Python 3.10 does not read a trailing Z.
    parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    if parsed.tzinfo is None:
        raise ValueError("the time has no UTC offset")
    return parsed


def _url_text(value: object, _: object) -> str:
    # Kept as text: ProductImage builds the yarl.URL when the attribute is read.
    if not isinstance(value, str) or not value:
        raise TypeError("expected a URL string")
    return value


def _strict_int(value: object, _: object) -> int:
    # The portal casts ids with (int) (productimage.php); numeric strings are accepted too.
    if isinstance(value, bool):
        raise TypeError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise TypeError("expected an integer")


def _strict_str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError("expected a string")


def _strict_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("Y", "N"):
        return value == "Y"
    raise TypeError("expected a boolean")


# The hooks of optional fields test for None themselves: a wrapper per field was a
# measurable share of the cost per image.


def _optional_str(value: object, _: object) -> str | None:
    if value is None or type(value) is str:
        return value
    return _strict_str(value, _)


def _optional_int(value: object, _: object) -> int | None:
    if value is None or type(value) is int:
        return value
    return _strict_int(value, _)


_IMAGE_TYPES: Final = {member.value: member for member in ImageType}


def _image_type(value: object, _: object) -> ImageType | None:
    if value is None:
        return None
    member = _IMAGE_TYPES.get(value) if isinstance(value, str) else None
    if member is None:
        raise ValueError(f"not an image type: {value!r}")
    return member


def _optional_datetime(value: object, _: object) -> datetime | None:
    return None if value is None else _parse_datetime(value, _)


def _configure(converter: cattrs.Converter, origin: URL) -> None:
    prefix = str(origin)

    def absolute(value: object, _: object) -> str | None:
        # A relative path joins the portal's origin (detailUrl is one in every docs example;
        # downloadUrl is absolute there, CHTTP::URN2URI, but is joined alike if it is not);
        # an absolute URL, a CDN one from the clouds module say, stays as it is.
        if type(value) is str and value.startswith(("http://", "https://")):
            return value
        if value is None or value == "":
            return None
        text = _url_text(value, None)
        if text.startswith("/") and not text.startswith("//"):
            return prefix + text
        try:
            return str(origin.join(as_url(text)))
        except ValueError:
            raise ValueError("not a URL") from None

    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    image_hook = make_dict_structure_fn(
        ProductImage,
        converter,
        id=override(rename="id", struct_hook=_strict_int),
        name=override(struct_hook=_optional_str),
        product_id=override(rename="productId", struct_hook=_optional_int),
        type=override(struct_hook=_image_type),
        create_time=override(rename="createTime", struct_hook=_optional_datetime),
        _download_url=override(rename="downloadUrl", struct_hook=absolute),
        _detail_url=override(rename="detailUrl", struct_hook=absolute),
    )
    converter.register_structure_hook(ProductImage, image_hook)
    converter.register_structure_hook(
        FieldInfo,
        make_dict_structure_fn(
            FieldInfo,
            converter,
            is_required=override(rename="isRequired"),
            is_read_only=override(rename="isReadOnly"),
            is_immutable=override(rename="isImmutable"),
        ),
    )


class Converter:
    """Structure wire dicts into models, turning any shape error into ``MalformedResponse``."""

    def __init__(self, origin: URL) -> None:
        # The fast converter skips cattrs' detailed validation; when it fails, the detailed
        # one runs on the same data to name the field in the error.
        self._fast = cattrs.Converter(detailed_validation=False)
        self._detailed = cattrs.Converter(detailed_validation=True)
        _configure(self._fast, origin)
        _configure(self._detailed, origin)
        self._image = self._fast.get_structure_hook(ProductImage)

    def image(self, data: object, *, method: str) -> ProductImage:
        """One ``catalog_product_image`` object."""
        if not isinstance(data, Mapping):
            raise MalformedResponse("an image is not an object", method=method)
        try:
            return self._image(data, ProductImage)  # type: ignore[no-any-return]  # cattrs hooks are untyped
        except Exception:
            return self.structure(data, ProductImage, what="productImage", method=method)

    def structure(self, data: Any, cls: type[T], *, what: str, method: str) -> T:
        """Structure *data* as *cls*, or raise ``MalformedResponse`` naming the bad fields."""
        try:
            return self._detailed.structure(data, cls)
        except Exception as exc:
            detail = "; ".join(cattrs.transform_error(exc, path=f"${what}"))
            raise MalformedResponse(f"malformed {what}: {detail}", method=method) from None

    def fields(self, data: object, *, method: str) -> dict[str, FieldInfo]:
        """The ``productImage`` field map of ``getFields``, keyed by wire name."""
        if not isinstance(data, Mapping):
            raise MalformedResponse("the field map is not an object", method=method)
        return {
            str(name): self.structure(info, FieldInfo, what=f"fields.{name}", method=method)
            for name, info in data.items()
        }


def to_wire_name(field: str) -> str:
    """The wire name of a ProductImage field given in snake_case or camelCase."""
    return _CAMEL.get(field, field)


__all__ = ["SELECTABLE", "Converter", "to_wire_name"]
