"""``BitrixClient``: one portal through one pooled aiohttp session; home of ``client.images``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
import attrs
from yarl import URL

from ._calls.caller import Caller
from ._calls.links import LinkStats, PublicLinks
from ._calls.retry import RetryPolicy
from ._coordinator import RedisCoordinator
from ._doctor import PortalReport, examine
from ._wire.auth import OAuthAuth, TokenCallback, WebhookAuth, check_method, check_portal_url
from ._wire.converters import Converter
from ._wire.limits import RateLimit
from ._wire.protocol import MAX_ANSWER_BYTES
from ._wire.public import LinkPolicy
from ._wire.stats import ClientStats
from ._wire.validate import check_int, check_number
from .images import Images
from .pagination import AsyncPaginator, paginate

__all__ = ["BitrixClient"]

DEFAULT_OAUTH_URL = "https://oauth.bitrix.info/oauth/token/"


class BitrixClient:
    """
    A connection to one Bitrix24 portal: auth, limits, retries and one pooled session.

    Build it with ``from_webhook`` or ``from_oauth``, use it as ``async with``, and reach
    the product images through ``client.images``. A session passed in is borrowed and left
    open; one the client created is closed with it.
    """

    def __init__(self, auth: WebhookAuth | OAuthAuth, options: _Options | None = None) -> None:
        options = options or _Options()
        policy = options.policy()
        self._caller = caller = options.caller(auth)
        # Public file links: a session of their own, with no credentials (_calls.links).
        self._links = PublicLinks(caller, policy, timeout=options.timeout)
        self.images = Images(caller, Converter(auth.origin), self._links)

    @classmethod
    def from_webhook(
        cls,
        url: str | URL,
        *,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 75.0,
        allow_insecure: bool = False,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        coordinator: RedisCoordinator | None = None,
    ) -> BitrixClient:
        """
        A client for an incoming webhook, ``https://<portal>/rest/<user_id>/<code>/``.

        Plain http is accepted for loopback hosts only, unless *allow_insecure* is true.
        An answer larger than *max_answer_bytes* (64 MiB) is refused unread.
        With a *coordinator*, every client for this portal on the same Redis shares one
        request bucket, and every client of this webhook one operating-time budget per method.
        """
        base = check_portal_url(url, allow_insecure=allow_insecure, what="the webhook URL")
        options = _Options(rate_limit, retry, session, timeout, max_answer_bytes, coordinator)
        return cls(WebhookAuth(base), options)

    @classmethod
    def from_oauth(
        cls,
        client_endpoint: str | URL,
        *,
        access_token: str,
        refresh_token: str,
        client_id: str,
        client_secret: str,
        oauth_url: str | URL = DEFAULT_OAUTH_URL,
        on_token_refresh: TokenCallback | None = None,
        expires_at: datetime | None = None,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 75.0,
        allow_insecure: bool = False,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        coordinator: RedisCoordinator | None = None,
    ) -> BitrixClient:
        """
        A client for an OAuth application.

        *client_endpoint* is the ``client_endpoint`` of the OAuth answer
        (``https://<portal>/rest/``). On ``expired_token`` the client refreshes through
        *oauth_url* once, replays the call, and awaits *on_token_refresh* with the new
        ``OAuthTokens`` so that they can be stored.

        With a *coordinator* the pair of this grant (one user's authorisation) lives in
        Redis: a process given a pair of the grant, or one it has since rotated, takes the
        newest stored pair; a pair Redis does not know starts a grant of its own. Every
        process refreshes through one lock (one refresh per expiry, *on_token_refresh*
        awaited by the process that made it), and the limits are shared as for webhooks.
        """
        auth = OAuthAuth.checked(
            client_endpoint,
            access_token=access_token,
            refresh_token=refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            oauth_url=oauth_url,
            on_token_refresh=on_token_refresh,
            expires_at=expires_at,
            allow_insecure=allow_insecure,
        )
        options = _Options(rate_limit, retry, session, timeout, max_answer_bytes, coordinator)
        return cls(auth, options)

    # --- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> BitrixClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pooled session if the client created it."""
        try:
            await self._caller.close()
        finally:
            await self._links.close()

    # --- calls ---------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> Any:
        """
        Call any REST method; return the decoded ``result``.

        Auth, throttling, retries and errors are the same as for ``client.images``. Whether
        a lost answer may be replayed is judged from the method's name (``*.list``, ``*.get``
        are reads); pass *idempotent* to say it yourself.
        """
        envelope = await self._caller.call(method, _checked(method, params), idempotent=idempotent)
        return envelope.result

    def paginate(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        key: str,
        start: int = 0,
    ) -> AsyncPaginator[Any]:
        """
        Walk any ``start``-paged list method; items are the raw dicts under *key*.

        ``client.paginate("catalog.product.list", {"filter": {"iblockId": 14},
        "select": ["id", "iblockId"]}, key="products")`` enumerates a catalog by the
        portal's own ``next`` (list-methods-pecularities.md), one page in memory.
        """
        params = _checked(method, params)
        if "start" in params:
            raise ValueError("pass start= to paginate(), not inside params")

        def page(offset: int) -> Mapping[str, Any]:
            return {**params, "start": offset}

        return paginate(self._caller, method, page, key=key, convert=tuple, start=start)

    async def doctor(self, *, write_check: int | None = None) -> PortalReport:
        """
        Check the portal before a long job; return a ``PortalReport`` of named checks.

        The checks, in order: ``connect``, ``auth``, ``scope``, ``methods``, ``read``,
        ``clock``, ``page_mode``, ``operating_counters``, ``public_files``, ``batch``, and
        ``write`` when *write_check* names a product: a 1x1 PNG is added to it as
        ``MORE_PHOTO`` inside a ``batch``, then deleted. Nothing is written otherwise. A
        dead portal is known within seconds (``connect`` fails, the rest are skipped). About
        fifteen requests, counted in ``client.stats``, and one public file outside REST.
        """
        return await examine(self._links, write_check=write_check)

    @property
    def stats(self) -> ClientStats:
        """Requests made, retries, refreshes and seconds spent waiting so far."""
        return self._caller.stats

    @property
    def public_links(self) -> LinkStats:
        """Files fetched through public links and through REST, and ``auto``'s fallbacks."""
        return self._links.stats

    @property
    def rate_limit(self) -> RateLimit:
        """The client-side limits in force."""
        return self._caller.rate_limit

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force."""
        return self._caller.retry

    @property
    def origin(self) -> URL:
        """The portal's origin (``https://example.bitrix24.com``)."""
        return self._caller.auth.origin

    def __repr__(self) -> str:
        kind = "webhook" if isinstance(self._caller.auth, WebhookAuth) else "oauth"
        return f"BitrixClient(<{self.origin.host}>, {kind})"


def _checked(method: str, params: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A call's method name and parameters, checked before any request."""
    check_method(method)
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping, got {type(params).__name__}")
    return params


@attrs.frozen
class _Options:
    """
    The options every constructor of ``BitrixClient`` takes, gathered once as given;
    ``caller`` checks them, before any request.
    """

    rate_limit: RateLimit | None = None
    retry: RetryPolicy | None = None
    session: aiohttp.ClientSession | None = None
    timeout: float = 75.0
    max_answer_bytes: int = MAX_ANSWER_BYTES
    coordinator: RedisCoordinator | None = None
    link_policy: LinkPolicy | None = None  # no constructor takes it yet: the tests' only

    def policy(self) -> LinkPolicy:
        """The public links' policy, checked."""
        if self.link_policy is not None and not isinstance(self.link_policy, LinkPolicy):
            raise TypeError("link_policy must be a LinkPolicy")
        return self.link_policy or LinkPolicy()

    def caller(self, auth: WebhookAuth | OAuthAuth) -> Caller:
        """The client's caller, the options checked before any request."""
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise TypeError("rate_limit must be a RateLimit")
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise TypeError("retry must be a RetryPolicy")
        if self.session is not None and not isinstance(self.session, aiohttp.ClientSession):
            raise TypeError("session must be an aiohttp.ClientSession")
        coordinator = self.coordinator
        if coordinator is not None and not isinstance(coordinator, RedisCoordinator):
            raise TypeError("coordinator must be a bitrix_images.RedisCoordinator or None")
        timeout = check_number("timeout", self.timeout, positive=True, finite=True)
        max_answer_bytes = check_int("max_answer_bytes", self.max_answer_bytes, minimum=1)
        return Caller(
            auth,
            rate_limit=self.rate_limit or RateLimit(),
            retry=self.retry or RetryPolicy(),
            session=self.session,
            timeout=float(timeout),
            max_answer_bytes=max_answer_bytes,
            coordinator=coordinator,
        )
