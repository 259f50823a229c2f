"""
Webhook and OAuth credentials: where a call goes and what it carries (no I/O here).

The caller asks an auth object for the URL and parameters of a call; for OAuth it also
asks for the refresh request and hands back the token endpoint's answer. Secrets live only
in these objects, whose reprs never show them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from yarl import URL

from ..exceptions import AuthError, MalformedResponse
from ..models import OAuthTokens
from .protocol import classify, loads

__all__ = ["OAuthAuth", "TokenCallback", "WebhookAuth", "check_method", "check_portal_url"]

TokenCallback = Callable[[OAuthTokens], Awaitable[None]]

# Method names are dotted identifiers (catalog.productImage.list); anything else would
# let a caller walk the URL path.
_METHOD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def check_method(method: object) -> str:
    """Validate a REST method name before it becomes part of a URL."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if not _METHOD.fullmatch(method):
        raise ValueError(f"not a REST method name: {method!r}")
    return method


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_portal_url(url: str | URL, *, allow_insecure: bool, what: str) -> URL:
    """
    Parse and validate a portal URL: https, or plain http only to a loopback host.

    The error names the host and scheme only: the URL itself may hold a webhook code.
    """
    if not isinstance(url, (str, URL)):
        raise TypeError(f"{what} must be a str or yarl.URL, got {type(url).__name__}")
    parsed = URL(url) if isinstance(url, str) else url
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{what} must be an absolute http(s) URL")
    if parsed.scheme == "http" and not allow_insecure and not is_loopback(parsed.host):
        raise ValueError(
            f"{what} uses plain http to {parsed.host}: credentials would cross the network "
            "unencrypted; use https, or pass allow_insecure=True"
        )
    if parsed.query_string or parsed.fragment:
        raise ValueError(f"{what} must not carry a query string or fragment")
    path = parsed.path if parsed.path.endswith("/") else parsed.path + "/"
    return parsed.with_path(path)


class WebhookAuth:
    """An incoming webhook: ``https://portal/rest/{user_id}/{code}/`` (local-webhooks.md)."""

    def __init__(self, url: URL) -> None:
        segments = [s for s in url.path.split("/") if s]
        if len(segments) < 3 or segments[-3] != "rest":
            raise ValueError("a webhook URL looks like https://<portal>/rest/<user_id>/<code>/")
        self._base = url
        self.origin = url.origin()

    def endpoint(self, method: str) -> URL:
        """``<base>/<method>.json``: the code rides in the path."""
        return self._base / f"{method}.json"

    def sign(self, params: Mapping[str, object]) -> Mapping[str, object]:
        """Webhook calls carry no extra parameters."""
        return params

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in logs or messages."""
        return (self._base.path.rstrip("/").rsplit("/", 1)[-1],)

    def __repr__(self) -> str:
        return f"WebhookAuth(<{self.origin.host}>)"


class OAuthAuth:
    """
    OAuth 2.0 tokens of a local or market application (settings/oauth/index.md).

    The access token travels as the ``auth`` parameter of the JSON body; it is refreshed
    through ``oauth_url`` with ``grant_type=refresh_token`` (settings/oauth/auto-renewal.md).
    """

    def __init__(
        self,
        tokens: OAuthTokens,
        *,
        client_id: str,
        client_secret: str,
        oauth_url: URL,
        on_token_refresh: TokenCallback | None,
    ) -> None:
        self.tokens = tokens
        self.origin = tokens.client_endpoint.origin()
        self._client_id = client_id
        self._client_secret = client_secret
        self.oauth_url = oauth_url
        self.on_token_refresh = on_token_refresh
        self.failed_token: str | None = None  # the token a refresh already failed for
        # member_id and user_id of the last refresh answer: whose grant the pair is.
        self.grantee: tuple[object, object] | None = None

    @classmethod
    def checked(
        cls,
        client_endpoint: str | URL,
        *,
        access_token: str,
        refresh_token: str,
        client_id: str,
        client_secret: str,
        oauth_url: str | URL,
        on_token_refresh: TokenCallback | None,
        expires_at: datetime | None,
        allow_insecure: bool,
    ) -> OAuthAuth:
        """The auth of ``BitrixClient.from_oauth``, its arguments checked."""
        endpoint = check_portal_url(
            client_endpoint, allow_insecure=allow_insecure, what="the client endpoint"
        )
        oauth_url = check_portal_url(oauth_url, allow_insecure=allow_insecure, what="oauth_url")
        for name, value in (
            ("access_token", access_token),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
            ("client_secret", client_secret),
        ):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty str")
        if on_token_refresh is not None and not callable(on_token_refresh):
            raise TypeError("on_token_refresh must be an async callable or None")
        tokens = OAuthTokens(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_at=expires_at or datetime.now(timezone.utc) + timedelta(hours=1),
            client_endpoint=endpoint,
        )
        return cls(
            tokens,
            client_id=client_id,
            client_secret=client_secret,
            oauth_url=oauth_url,
            on_token_refresh=on_token_refresh,
        )

    @property
    def client_id(self) -> str:
        """The application's public id (names its shared state in a coordinator)."""
        return self._client_id

    def adopt(self, tokens: OAuthTokens) -> None:
        """Use *tokens* from now on (a pair another process refreshed)."""
        if tokens != self.tokens:
            self.tokens = tokens
            self.failed_token = None

    def endpoint(self, method: str) -> URL:
        """``<client_endpoint>/<method>.json``."""
        return self.tokens.client_endpoint / f"{method}.json"

    def sign(self, params: Mapping[str, object]) -> Mapping[str, object]:
        """Add ``auth`` to the parameters (authorization.md)."""
        return {**params, "auth": self.tokens.access_token}

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in logs or messages."""
        return (self.tokens.access_token, self.tokens.refresh_token, self._client_secret)

    def refresh_form(self) -> dict[str, str]:
        """
        The form of the refresh request.

        It is POSTed as a form, not sent as the documented GET query, so that the client
        secret and refresh token stay out of URLs and access logs (b24jssdk does the same,
        "verified empirically" against the OAuth server).
        """
        return {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": self.tokens.refresh_token,
        }

    def accept(self, status: int, body: bytes, *, now: datetime | None = None) -> OAuthTokens:
        """Read the token endpoint's answer; raise ``AuthError`` unless it holds new tokens."""
        try:
            data: Any = loads(body)
        except ValueError:
            # from None: the decoder's error quotes the body, which may hold a token.
            raise AuthError(
                "the token refresh failed: the OAuth server's answer is not JSON",
                status=status,
                method="oauth.token",
            ) from None
        if not isinstance(data, dict) or "error" in data or status >= 300:
            code = data.get("error") if isinstance(data, dict) else None
            error = classify(
                code,
                data.get("error_description") if isinstance(data, dict) else None,
                status,
                "oauth.token",
            )
            raise AuthError(
                f"the token refresh was refused: {error.description}",
                code=error.code,
                status=status,
                method="oauth.token",
            )
        access, refresh = data.get("access_token"), data.get("refresh_token")
        if not isinstance(access, str) or not isinstance(refresh, str) or not access:
            raise MalformedResponse(
                "the OAuth answer lacks access_token or refresh_token", method="oauth.token"
            )
        now = now or datetime.now(timezone.utc)
        expires = data.get("expires")
        expires_in = data.get("expires_in")
        if isinstance(expires, (int, float)) and not isinstance(expires, bool):
            expires_at = datetime.fromtimestamp(expires, timezone.utc)
        elif isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
            expires_at = now + timedelta(seconds=expires_in)
        else:
            expires_at = now + timedelta(hours=1)  # auto-renewal.md: tokens live one hour
        endpoint = data.get("client_endpoint")
        client_endpoint = (
            URL(endpoint)
            if isinstance(endpoint, str) and URL(endpoint).origin() == self.origin
            else self.tokens.client_endpoint
        )
        self.tokens = OAuthTokens(
            access_token=access,
            refresh_token=refresh,
            expires_at=expires_at,
            client_endpoint=client_endpoint,
        )
        self.failed_token = None
        self.grantee = (data.get("member_id"), data.get("user_id"))
        return self.tokens

    def __repr__(self) -> str:
        return f"OAuthAuth(<{self.origin.host}>)"
