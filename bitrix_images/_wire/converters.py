"""
The private converter: camelCase wire dicts to the frozen models in ``models``.

Serialization lives here, out of the models (the cattrs way). Each client builds one
converter bound to its portal's origin, because ``detailUrl`` arrives as a path relative
to it (catalog-product-image-list.md example: ``"/upload/iblock/6f1/.../test.jpeg"``).

Images take a structure function written for ``ProductImage`` (``_image_builder``): listing
builds one object per image, and the generic cattrs function plus the attrs ``__init__`` were
most of the client's CPU per image (benchmarks/RESULTS.md, issue 14). Whenever that fast
function raises, the same data goes through the detailed cattrs converter, which gives the
answer or a ``MalformedResponse`` naming the bad field; the two agree by construction (they
share the field rules below) and by property test (tests/wire/test_converters.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, TypeVar

import cattrs
from cattrs.gen import make_dict_structure_fn, override
from yarl import URL

from ..exceptions import MalformedResponse
from ..models import FieldInfo, ImageType, ProductImage, as_url

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

_WEB: Final = ("http://", "https://")

# PHP's date('c') gives +02:00 (catalog_product_image createTime, data-types.md); a trailing
# Z is read too. Python 3.11 reads it itself; 3.10 needs it spelled +00:00. Both give UTC.
if sys.version_info >= (3, 11):
    _fromisoformat = datetime.fromisoformat
else:  # pragma: no cover - taken on Python 3.10 only

    def _fromisoformat(value: str) -> datetime:
        return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


def _parse_datetime(value: object, _: object = None) -> datetime:
    if not isinstance(value, str):
        raise TypeError("expected an ISO-8601 string")
    parsed = _fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("the time has no UTC offset")
    return parsed


def _strict_int(value: object, _: object = None) -> int:
    # The portal casts ids with (int) (productimage.php); numeric strings are accepted too.
    if isinstance(value, bool):
        raise TypeError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise TypeError("expected an integer")


def _strict_str(value: object, _: object = None) -> str:
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


def _optional_str(value: object, _: object = None) -> str | None:
    if value is None or type(value) is str:
        return value
    return _strict_str(value)


def _optional_int(value: object, _: object = None) -> int | None:
    if value is None or type(value) is int:
        return value
    return _strict_int(value)


_IMAGE_TYPES: Final = {member.value: member for member in ImageType}


def _image_type(value: object, _: object = None) -> ImageType | None:
    if value is None:
        return None
    member = _IMAGE_TYPES.get(value) if isinstance(value, str) else None
    if member is None:
        raise ValueError(f"not an image type: {value!r}")
    return member


def _optional_datetime(value: object, _: object = None) -> datetime | None:
    return None if value is None else _parse_datetime(value)


def _web_link(value: object, origin: URL) -> str | None:
    """
    The portal's URL text made absolute, or ``None`` when it is no http(s) link at all.

    A path joins the portal's origin (detailUrl is one in every docs example; downloadUrl
    is absolute there, CHTTP::URN2URI, but is joined alike if it is not). An absolute
    http(s) URL stays byte for byte, on whatever host: the clouds module serves upload files
    from a CDN. ``javascript:``, ``file:``, ``data:`` and text that is no URL are not links
    to an image file. A value that is not a string is a malformed answer (TypeError).
    """
    if not isinstance(value, str):
        if value is None:
            return None
        raise TypeError("expected a URL string")
    if not value:  # what the portal sends for a field it has no value for
        return None
    if value.startswith(_WEB):
        return value
    if value.startswith("/") and not value.startswith("//"):
        return str(origin) + value
    try:
        url = as_url(value)
        if not url.scheme:
            url = origin.join(url)
            value = str(url)
        if url.scheme not in ("http", "https") or not url.host:
            return None
    except ValueError:
        return None
    return value


def _link_hooks(origin: URL) -> tuple[Callable[..., str | None], Callable[..., str | None]]:
    """The rules for downloadUrl and detailUrl (each takes the value and an ignored 2nd)."""

    def download(value: object, _: object = None) -> str | None:
        # Not a link: kept as sent, so that reading ``download_url`` raises
        # MalformedResponse for this one image while the rest of the listing goes on.
        link = _web_link(value, origin)
        return value if link is None and value else link  # type: ignore[return-value]  # str

    def detail(value: object, _: object = None) -> str | None:
        # Informational only, never fetched by the SDK: an unusable one is left out (None).
        return _web_link(value, origin)

    return download, detail


def _image_builder(
    origin: URL,
) -> Callable[[Iterable[object]], list[ProductImage]]:
    """
    The fast structure function: one loop over a command's images, no ``__init__``.

    Each field is checked once, in line for the common wire shapes (what a portal sends:
    int ids, str names, a known type, an ISO time, http(s) or /path URLs) and by the shared
    hooks otherwise. The instance is made with ``object.__new__`` and its fields set through
    the slot descriptors, which is what the frozen ``__init__`` does minus its converters
    and per-call overhead; the values are the ones that ``__init__`` would store. Any
    exception means "let the detailed converter decide" and is never shown to the caller.
    """
    prefix = str(origin)
    download_hook, detail_hook = _link_hooks(origin)
    new = object.__new__
    set_id, set_name, set_product, set_type, set_created, set_download, set_detail = (
        ProductImage.__dict__[name].__set__
        for name in (
            "id",
            "name",
            "product_id",
            "type",
            "create_time",
            "_download_url",
            "_detail_url",
        )
    )
    types = _IMAGE_TYPES
    fromiso = _fromisoformat
    web = _WEB
    cls = ProductImage

    def build(items: Iterable[object]) -> list[ProductImage]:
        out: list[ProductImage] = []
        append = out.append
        for data in items:
            if type(data) is not dict:
                raise TypeError  # a Mapping of another kind: the detailed path reads it
            get = data.get
            image = new(cls)
            value = data["id"]
            set_id(image, value if type(value) is int else _strict_int(value))
            value = get("name")
            set_name(image, value if value is None or type(value) is str else _strict_str(value))
            value = get("productId")
            set_product(image, value if value is None or type(value) is int else _strict_int(value))
            value = get("type")
            set_type(image, None if value is None else types[value])
            value = get("createTime")
            if value is not None:
                value = fromiso(value)
                if value.tzinfo is None:
                    raise ValueError
            set_created(image, value)
            value = get("downloadUrl")
            if value is not None and not (type(value) is str and value.startswith(web)):
                value = download_hook(value)
            set_download(image, value)
            value = get("detailUrl")
            if value is not None:
                if type(value) is str and value[:1] == "/" and value[1:2] != "/":
                    value = prefix + value
                elif not (type(value) is str and value.startswith(web)):
                    value = detail_hook(value)
            set_detail(image, value)
            append(image)
        return out

    return build


def _configure(converter: cattrs.Converter, origin: URL) -> None:
    download_hook, detail_hook = _link_hooks(origin)
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
        _download_url=override(rename="downloadUrl", struct_hook=download_hook),
        _detail_url=override(rename="detailUrl", struct_hook=detail_hook),
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
        self._origin = origin
        self._build = _image_builder(origin)
        # Built on first use (a malformed image or getFields): a few ms a client saves.
        self._detailed_converter: cattrs.Converter | None = None

    @property
    def _detailed(self) -> cattrs.Converter:
        if self._detailed_converter is None:
            converter = cattrs.Converter(detailed_validation=True)
            _configure(converter, self._origin)
            self._detailed_converter = converter
        return self._detailed_converter

    def images(self, items: Iterable[object], *, method: str) -> list[ProductImage]:
        """The ``catalog_product_image`` objects of one answer, in order."""
        items = items if isinstance(items, (list, tuple)) else list(items)
        try:
            return self._build(items)
        except Exception:
            # Any failure: each image again, the detailed converter naming a bad field.
            return [self.image(item, method=method) for item in items]

    def image(self, data: object, *, method: str) -> ProductImage:
        """One ``catalog_product_image`` object."""
        if not isinstance(data, Mapping):
            raise MalformedResponse("an image is not an object", method=method)
        try:
            return self._build((data,))[0]
        except Exception:
            # The detailed converter gives the same image or names the bad field.
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
