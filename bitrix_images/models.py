"""
The values the SDK returns: frozen attrs classes, snake_case in Python.

They hold data only; the private converter in ``_converters`` maps them from and to the
camelCase wire format (api-reference/catalog/data-types.md, "catalog_product_image").
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs
from yarl import URL

__all__ = ["FieldInfo", "ImageType", "OAuthTokens", "ProductImage"]


class ImageType(enum.Enum):
    """Where an image sits on the product card (catalog-product-image-add.md)."""

    DETAIL_PICTURE = "DETAIL_PICTURE"
    PREVIEW_PICTURE = "PREVIEW_PICTURE"
    MORE_PHOTO = "MORE_PHOTO"


def _signed_url_repr(url: URL | None) -> str:
    # downloadUrl carries the webhook code or an access token and a signature (rest_util.php
    # getSpecialUrl): never show it in a repr.
    return "None" if url is None else f"<signed URL on {url.host}>"


@attrs.frozen
class ProductImage:
    """
    One image of a product.

    A field the caller left out of ``select`` is ``None``. ``detail_url`` is absolute (the
    portal sends a path, joined here to the portal's origin); ``download_url`` is the portal's
    signed link, fetched by ``client.images.download``.
    """

    id: int
    name: str | None = None
    product_id: int | None = None
    type: ImageType | None = None
    create_time: datetime | None = None
    download_url: URL | None = attrs.field(default=None, repr=_signed_url_repr)
    detail_url: URL | None = None


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
