"""What a portal's routes share: its options, data, limits, counters, faults and tokens.

:class:`~._portal.FakePortal` builds one :class:`PortalState` and hands it to each route, so
the routes depend on this module and never on the portal object itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

import attrs
import yarl

from ._catalog import Catalog
from ._catalogs import CatalogIndex
from ._counters import Counters
from ._faults import FaultQueue
from ._limits import OperatingLimiter, PortalBucket
from ._options import RouteOptions
from ._tokens import TokenStore

__all__ = ["Auth", "Identity", "PortalState"]


@attrs.frozen
class Identity:
    """The portal's credentials: one webhook and one OAuth application."""

    user_id: int
    webhook_code: str = attrs.field(repr=False)
    client_id: str
    client_secret: str = attrs.field(repr=False)
    member_id: str


@attrs.define
class PortalState:
    options: RouteOptions
    identity: Identity
    catalog: Catalog
    catalogs: CatalogIndex
    clock: Callable[[], float]
    cost: Callable[[str], float]
    secret: bytes = attrs.field(repr=False)
    tokens: TokenStore
    bucket: PortalBucket | None = None
    operating: OperatingLimiter | None = None
    #: Seconds another application spends at the next request of a method (``spend``).
    spend_next: dict[str, float] = attrs.Factory(dict)
    counters: Counters = attrs.Factory(Counters)
    faults: FaultQueue = attrs.Factory(FaultQueue)
    #: Where the portal and its files are served (set when the sites start).
    origin: yarl.URL = attrs.Factory(lambda: yarl.URL("http://127.0.0.1"))
    files_origin: yarl.URL | None = None

    def server_now(self) -> float:
        """The portal's own clock, ``clock_skew`` seconds off the client's."""
        return self.clock() + self.options.clock_skew

    def mac(self, message: str, size: int = 32) -> str:
        return hashlib.blake2b(message.encode(), key=self.secret, digest_size=size).hexdigest()

    def webhook_url(self) -> yarl.URL:
        return self.origin.with_path(f"/rest/{self.identity.user_id}/{self.identity.webhook_code}/")

    def client_endpoint(self) -> yarl.URL:
        return self.origin.with_path("/rest/")


@attrs.frozen
class Auth:
    """Who is calling, and what the download signature covers (CRestUtil::getDownloadUrl)."""

    kind: Literal["webhook", "oauth", "bearer"]
    signed: str = attrs.field(repr=False)
    query: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
