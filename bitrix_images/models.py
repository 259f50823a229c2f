"""
The values the SDK returns: frozen attrs classes, snake_case in Python.

They hold data only; the private converter in ``_wire.converters`` maps them from and to the
camelCase wire format (api-reference/catalog/data-types.md, "catalog_product_image").
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs
from yarl import URL

from .exceptions import BitrixError, MalformedResponse

__all__ = ["FieldInfo", "ImageType", "OAuthTokens", "ProductImage", "ProductListing"]


class ImageType(enum.Enum):
    """Where an image sits on the product card (catalog-product-image-add.md)."""

    DETAIL_PICTURE = "DETAIL_PICTURE"
    PREVIEW_PICTURE = "PREVIEW_PICTURE"
    MORE_PHOTO = "MORE_PHOTO"


def as_url(text: str) -> URL:
    """
    A URL from the portal's text, taken as already encoded when it plainly is.

    Keeping a signed link byte for byte matters (general-principles.md: do not change the
    signed link); yarl's requoting would turn ``%2F`` in the token into ``/``.
    """
    if text.isascii() and " " not in text:
        return URL(text, encoded=True)
    return URL(text)


def _url_text(value: URL | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, URL):
        return str(value)
    raise TypeError(f"expected a yarl.URL, str or None, got {type(value).__name__}")


@attrs.frozen(repr=False)
class ProductImage:
    """
    One image of a product.

    A field the caller left out of ``select`` is ``None``. Both URLs are absolute http(s)
    links: a path from the portal is joined to the portal's origin.

    ``detail_url`` is the image file's public link. It is usually on the portal, but may be
    on another host (a CDN, when the portal keeps its files in cloud storage), so the SDK
    never sends credentials to it; a value that is no http(s) link (``javascript:``,
    ``file:``, ``data:``, text that is no URL) is dropped to ``None``.

    ``download_url`` is the portal's signed link, fetched by ``client.images.download``
    (only on the portal's own origin). A value that is no http(s) link or is malformed is
    kept, and reading the attribute raises ``MalformedResponse``, so that one bad image
    fails alone.

    The two URLs are kept as the portal's text and become ``yarl.URL`` values when read:
    building them for every listed image was most of the SDK's cost per image, and most
    images are listed without their URLs ever being read.
    """

    id: int
    name: str | None = None
    product_id: int | None = None
    type: ImageType | None = None
    create_time: datetime | None = None
    _download_url: str | None = attrs.field(default=None, converter=_url_text, alias="download_url")
    _detail_url: str | None = attrs.field(default=None, converter=_url_text, alias="detail_url")

    @property
    def download_url(self) -> URL | None:
        """The signed download link (it carries credentials: keep it to yourself)."""
        return _read_url(self._download_url, "downloadUrl")

    @property
    def detail_url(self) -> URL | None:
        """The absolute http(s) link to the image file, on the portal or its CDN."""
        return _read_url(self._detail_url, "detailUrl")

    def __repr__(self) -> str:
        # downloadUrl carries the webhook code or an access token and a signature
        # (rest_util.php getSpecialUrl): a repr shows only its host, and never parses it.
        download = self._download_url
        shown = "None" if download is None else f"<signed URL on {_host_of(download)}>"
        return (
            f"ProductImage(id={self.id!r}, name={self.name!r}, product_id={self.product_id!r}, "
            f"type={self.type!r}, create_time={self.create_time!r}, download_url={shown}, "
            f"detail_url={self._detail_url!r})"
        )


def _read_url(text: str | None, wire_name: str) -> URL | None:
    if text is None:
        return None
    # The text itself is never quoted: a signed downloadUrl carries credentials.
    try:
        url = as_url(text)
        usable = url.scheme in ("http", "https") and bool(url.host) and url.port is not None
    except ValueError:  # yarl checks some parts (the port's range) only when read
        raise MalformedResponse(f"the portal sent a malformed {wire_name}") from None
    if not usable:
        raise MalformedResponse(f"the portal sent a {wire_name} that is no http(s) link")
    return url


def _host_of(text: str) -> str:
    authority = text.partition("://")[2].partition("/")[0].partition("?")[0]
    return authority.rpartition("@")[2] or "?"


@attrs.frozen
class ProductListing:
    """
    One product from ``client.images.list_products``: every image it has, or its error.

    Attributes:
        product_id: the product.
        images: all its images, in the portal's order (empty when it has none, or failed).
        error: why it could not be listed (``NotFound``, ``AccessDenied``, a
            ``MalformedResponse`` of its own answer, or its retries spent), else ``None``.
            A failed listing is never an empty product.
    """

    product_id: int
    images: tuple[ProductImage, ...] = ()
    error: BitrixError | None = None


@attrs.frozen
class FieldInfo:
    """The description of one field, as ``catalog.productImage.getFields`` gives it."""

    type: str
    is_required: bool = False
    is_read_only: bool = False
    is_immutable: bool = False


@attrs.frozen
class OAuthTokens:
    """
    A pair of OAuth tokens and where they apply (settings/oauth/index.md).

    Persist them from ``on_token_refresh``: every refresh returns a new ``refresh_token``
    and the old one stops working.
    """

    access_token: str = attrs.field(repr=False)
    refresh_token: str = attrs.field(repr=False)
    expires_at: datetime
    client_endpoint: URL
