"""The portal's OAuth tokens: the current pair, their lifetimes, and who may refresh them."""

from __future__ import annotations

import secrets
from collections import Counter
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
        # Other users of the application: the pair above is the portal's own user's.
        self._owners: dict[str, int] = {}  # access token -> its user, for other users'
        self._others: dict[int, str] = {}  # user -> the refresh token that user can exchange
        self.requests_by_user: Counter[int] = Counter()
        self.issue()

    def issue(self) -> None:
        """A new pair; the previous refresh token is spent."""
        self.access_token = secrets.token_hex(32)
        self.refresh_token = secrets.token_hex(32)
        self._tokens[self.access_token] = _Token(expires_at=self._clock() + TOKEN_LIFETIME)

    def expires_at(self, access_token: str | None = None) -> float:
        return self._tokens[access_token or self.access_token].expires_at

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

    # -- other users of the application ---------------------------------------------------

    def issue_for(self, user_id: int) -> tuple[str, str]:
        """A new pair of *user_id* (not the portal's own user); their previous one is spent."""
        access, refresh = secrets.token_hex(32), secrets.token_hex(32)
        self._tokens[access] = _Token(expires_at=self._clock() + TOKEN_LIFETIME)
        self._owners[access] = user_id
        self._others[user_id] = refresh
        return access, refresh

    def user_of_refresh(self, refresh_token: object) -> int | None:
        """The other user whose current refresh token this is, if any."""
        return next((u for u, r in self._others.items() if r == refresh_token), None)

    def ran(self, access_token: str, own_user: int) -> None:
        """Count a request that ran with *access_token* under its user."""
        self.requests_by_user[self._owners.get(access_token, own_user)] += 1

    def expire(self, access_token: str) -> None:
        self._tokens[access_token].expired = True
