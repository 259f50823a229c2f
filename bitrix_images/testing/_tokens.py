"""The portal's OAuth tokens: the current pair, their lifetimes, and who may refresh them."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import attrs

from ._errors import EXPIRED_TOKEN, INVALID_TOKEN, RestError

__all__ = ["TOKEN_LIFETIME", "TokenStore"]

# DOCS settings/oauth/index.md: an access token lives one hour.
TOKEN_LIFETIME = 3600


@attrs.define
class _Token:
    expires_at: float
    remaining: int | None = None
    expired: bool = False


class TokenStore:
    """Access tokens issued so far (an old one stays valid until it expires) and the one
    refresh token that can be exchanged now."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self.access_token = ""
        self.refresh_token = ""
        self.reject_refresh = False
        self.issue()

    def issue(self) -> None:
        """A new pair; the previous refresh token is spent."""
        self.access_token = secrets.token_hex(32)
        self.refresh_token = secrets.token_hex(32)
        self._tokens[self.access_token] = _Token(expires_at=self._clock() + TOKEN_LIFETIME)

    def expires_at(self) -> float:
        return self._tokens[self.access_token].expires_at

    def expire_current(self) -> None:
        self._tokens[self.access_token].expired = True

    def expire_after(self, requests: int | None, seconds: float | None) -> None:
        token = self._tokens[self.access_token]
        if requests is not None:
            token.remaining = requests
        if seconds is not None:
            token.expires_at = self._clock() + seconds

    def check(self, value: str) -> None:
        """Raise the portal's 401 for an unknown or expired access token."""
        token = self._tokens.get(value)
        if token is None:
            raise RestError.from_body(401, INVALID_TOKEN)
        if token.remaining is not None:
            if token.remaining <= 0:
                token.expired = True
            token.remaining -= 1
        if token.expired or self._clock() >= token.expires_at:
            raise RestError.from_body(401, EXPIRED_TOKEN)
