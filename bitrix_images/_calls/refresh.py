"""
``TokenRefresher``: one OAuth refresh per expiry, for every call that saw the token expire.

Refresh once under an ``asyncio.Lock``: re-check inside the lock, refresh, replay once
(oauth/index.md). With a coordinator the pair is shared through Redis: taken from it once,
and refreshed under its lock, so one refresh serves every process.
"""

from __future__ import annotations

import asyncio
import logging

from .._coordinator import SharedTokens
from .._net.transport import Transport
from .._wire.auth import OAuthAuth
from .._wire.stats import ClientStats
from ..exceptions import AuthError, BitrixError
from ..models import OAuthTokens

__all__ = ["TokenRefresher"]

log = logging.getLogger("bitrix_images")


class TokenRefresher:
    """
    The OAuth pair of one client: loading it from the coordinator, refreshing it.

    Args:
        auth: the client's OAuth auth (its pair is replaced in place).
        transport: sends the refresh request.
        stats: the client's counters (``refreshes``).
        shared: the pair shared through the coordinator, or ``None``.
    """

    def __init__(
        self,
        auth: OAuthAuth,
        transport: Transport,
        stats: ClientStats,
        shared: SharedTokens | None = None,
    ) -> None:
        self.auth = auth
        self._transport = transport
        self._stats = stats
        self._shared = shared
        self._lock = asyncio.Lock()
        self._refreshing: asyncio.Future[None] | None = None
        self._loaded_lock = asyncio.Lock()
        self._loaded = shared is None

    @property
    def token(self) -> str:
        """The access token requests carry now."""
        return self.auth.tokens.access_token

    async def load(self) -> None:
        """Take the OAuth pair from the coordinator once (ours seeds it when it has none)."""
        if self._loaded:
            return
        async with self._loaded_lock:
            if not self._loaded and self._shared is not None:
                self.auth.adopt(await self._shared.load(self.auth.tokens))
            self._loaded = True

    async def close(self) -> None:
        """Let a refresh in flight end (the client is closing)."""
        refreshing = self._refreshing
        if refreshing is not None and not refreshing.done():
            # The OAuth server may have replaced the pair already: a refresh in flight (and
            # its on_token_refresh) finishes before the session goes, even when the caller
            # was cancelled (SIGINT, SIGTERM), or the new refresh token would be lost. One
            # still waiting for another process's lock has sent nothing: it ends at once.
            if self._shared is not None:
                self._shared.abandon(refreshing)
            await asyncio.wait({refreshing})

    async def refresh(self, used_token: str | None) -> None:
        """
        Refresh the access token once for everyone who saw *used_token* expire.

        The refresh runs as a task of its own, shielded from the callers: the OAuth server
        replaces the refresh token as soon as it answers, so a refresh abandoned half-way
        by a cancelled caller would lock the client out for good.
        """
        auth = self.auth
        async with self._lock:
            if auth.tokens.access_token != used_token:
                return  # another call refreshed it while this one waited for the lock
            if auth.failed_token == used_token:
                raise AuthError(
                    "the access token expired and its refresh failed", method="oauth.token"
                )
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.ensure_future(self._run(used_token))
                self._refreshing.add_done_callback(_retrieve)
            refreshing = self._refreshing
        await asyncio.shield(refreshing)

    async def _run(self, used_token: str | None) -> None:
        auth = self.auth
        if self._shared is None or used_token is None:
            tokens = await self._request(used_token)
        else:

            async def run(newest: OAuthTokens) -> OAuthTokens:
                auth.adopt(newest)  # refresh the pair the other processes know as newest
                return await self._request(used_token)

            # Under the coordinator's lock: one refresh across every process.
            tokens, refreshed = await self._shared.refresh(used_token, auth.tokens, run)
            auth.adopt(tokens)
            if not refreshed:
                log.debug("took the OAuth tokens another process refreshed")
                return
        self._stats.refreshes += 1
        if auth.on_token_refresh is not None:
            await auth.on_token_refresh(tokens)

    async def _request(self, used_token: str | None) -> OAuthTokens:
        """Ask the OAuth server for a new pair; remember a refusal of *used_token*'s."""
        auth = self.auth
        log.debug("refreshing the OAuth access token")
        try:
            status, body = await self._transport.post(
                auth.oauth_url, "oauth.token", idempotent=True, data=auth.refresh_form()
            )
            return auth.accept(status, body)
        except BitrixError as error:
            auth.failed_token = used_token
            if isinstance(error, AuthError):
                raise
            # from None: the cause may quote the OAuth server's answer, which holds tokens.
            raise AuthError(
                f"the token refresh failed: {error.description}",
                code=error.code,
                status=error.status,
                method="oauth.token",
            ) from None


def _retrieve(task: asyncio.Future[None]) -> None:
    # The refresh's own outcome reaches its callers through the shield; this only keeps
    # asyncio from logging "exception was never retrieved" when every caller is gone.
    if not task.cancelled():
        task.exception()
