"""
bitrix_images: an asyncio SDK for Bitrix24 product images.

``BitrixClient`` talks to one portal (webhook or OAuth) through one pooled aiohttp session,
keeps to the portal's limits, retries what is safe to retry, and returns frozen attrs
values. ``mirror`` and ``upload`` keep a folder and a catalog in step, in either
direction. ``bitrix_images.testing`` holds an embedded portal for tests.
"""

from ._calls.links import LinkStats
from ._calls.retry import RetryPolicy
from ._coordinator import RedisCoordinator
from ._doctor import Check, PortalReport
from ._wire.limits import RateLimit
from ._wire.stats import ClientStats
from .client import BitrixClient
from .exceptions import (
    AccessDenied,
    AuthError,
    BatchError,
    BitrixError,
    CoordinatorUnavailable,
    InvalidRequest,
    MalformedResponse,
    NotFound,
    OutcomeUnknown,
    PortalMismatch,
    PortalMoved,
    RateLimited,
    ServerError,
    TransportError,
)
from .images import Images
from .models import FieldInfo, ImageType, OAuthTokens, ProductImage, ProductListing
from .pagination import AsyncPaginator, Page
from .sync import FileEvent, MirrorResult, UploadResult, catalog_ids, mirror, upload

__all__ = [
    "AccessDenied",
    "AsyncPaginator",
    "AuthError",
    "BatchError",
    "BitrixClient",
    "BitrixError",
    "Check",
    "ClientStats",
    "CoordinatorUnavailable",
    "FieldInfo",
    "FileEvent",
    "ImageType",
    "Images",
    "InvalidRequest",
    "LinkStats",
    "MalformedResponse",
    "MirrorResult",
    "NotFound",
    "OAuthTokens",
    "OutcomeUnknown",
    "Page",
    "PortalMismatch",
    "PortalMoved",
    "PortalReport",
    "ProductImage",
    "ProductListing",
    "RateLimit",
    "RateLimited",
    "RedisCoordinator",
    "RetryPolicy",
    "ServerError",
    "TransportError",
    "UploadResult",
    "__version__",
    "catalog_ids",
    "mirror",
    "upload",
]


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import version  # noqa: PLC0415 -- only when asked

    return version("bitrix_images")
