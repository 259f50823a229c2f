"""The read side of a portal: what it holds and counts, its addresses and credentials."""

from __future__ import annotations

from collections import Counter

import yarl

from ._catalog import Catalog
from ._catalogs import PortalCatalog
from ._counters import Counters
from ._state import PortalState

__all__ = ["PortalView"]


class PortalView:
    """Properties of :class:`~._portal.FakePortal` over its shared state."""

    _state: PortalState
    _port: int

    # -- what it holds and counts ----------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """The products and images (change them directly, no HTTP)."""
        return self._state.catalog

    @property
    def catalogs(self) -> tuple[PortalCatalog, ...]:
        return self._state.catalogs.catalogs

    @property
    def counters(self) -> Counters:
        return self._state.counters

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def origin(self) -> yarl.URL:
        """``http://127.0.0.1:PORT``"""
        return self._state.origin

    @property
    def files_origin(self) -> yarl.URL | None:
        """Where ``detailUrl`` files are served from when not the portal's own origin."""
        return self._state.files_origin

    @property
    def webhook_url(self) -> yarl.URL:
        """``http://127.0.0.1:PORT/rest/{user_id}/{code}/``"""
        return self._state.webhook_url()

    @property
    def client_endpoint(self) -> yarl.URL:
        """The OAuth REST base, ``http://127.0.0.1:PORT/rest/``."""
        return self._state.client_endpoint()

    @property
    def oauth_url(self) -> yarl.URL:
        """The token endpoint, ``http://127.0.0.1:PORT/oauth/token/``."""
        return self._state.origin.with_path("/oauth/token/")

    # -- credentials ----------------------------------------------------------------------

    @property
    def user_id(self) -> int:
        return self._state.identity.user_id

    @property
    def webhook_code(self) -> str:
        return self._state.identity.webhook_code

    @property
    def client_id(self) -> str:
        return self._state.identity.client_id

    @property
    def client_secret(self) -> str:
        return self._state.identity.client_secret

    @property
    def member_id(self) -> str:
        return self._state.identity.member_id

    @property
    def access_token(self) -> str:
        return self._state.tokens.access_token

    @property
    def refresh_token(self) -> str:
        return self._state.tokens.refresh_token

    @property
    def reject_refresh(self) -> bool:
        """While true, the token endpoint refuses every refresh (``invalid_grant``)."""
        return self._state.tokens.reject_refresh

    @reject_refresh.setter
    def reject_refresh(self, value: bool) -> None:
        self._state.tokens.reject_refresh = value

    def expire_access_token(self) -> None:
        """From now on the current access token answers 401 ``expired_token``."""
        self._state.tokens.expire_current()

    def expire_token_after(self, requests: int | None = None, seconds: float | None = None) -> None:
        """Expire the current access token after ``requests`` more REST requests that use
        it, or ``seconds`` from now (whichever comes first)."""
        self._state.tokens.expire_after(requests, seconds)

    # -- several users of the OAuth application (the pair above is user_id's) -------------

    def authorize(self, user_id: int | None = None) -> tuple[str, str]:
        """
        Authorise the application for *user_id* (the portal's own user by default) anew and
        return the new ``(access_token, refresh_token)``; that user's previous refresh token
        stops working, as when the application is installed or opened again.
        """
        tokens = self._state.tokens
        if user_id is None or user_id == self.user_id:
            tokens.issue()
            return tokens.access_token, tokens.refresh_token
        return tokens.issue_for(user_id)

    @property
    def requests_by_user(self) -> Counter[int]:
        """The OAuth REST requests that ran, by the user whose access token they carried."""
        return self._state.tokens.requests_by_user

    def expire(self, access_token: str) -> None:
        """From now on *access_token* (any user's) answers 401 ``expired_token``."""
        self._state.tokens.expire(access_token)
