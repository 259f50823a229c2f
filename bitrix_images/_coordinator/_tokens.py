"""
``SharedTokens``: one OAuth pair for every process, refreshed once per expiry.

The pair lives in Redis. A process whose token the portal refused re-reads it; if another
process already stored a newer pair it takes that one. Otherwise it takes the refresh
lock (a random token with an expiry; released by compare-and-delete), re-reads once more,
refreshes, and stores the new pair while releasing the lock in one step. A process that
cannot reach Redis never refreshes: the OAuth server rotates the refresh token, so a
refresh outside the lock could lock every other process out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from yarl import URL

from ..exceptions import CoordinatorUnavailable
from ..models import OAuthTokens
from ._redis import Link, RedisDown

__all__ = ["SharedTokens"]

log = logging.getLogger("bitrix_images")

# How often a process waiting for another's refresh looks again (jittered).
_POLL: Final = 0.05
# Attempts to store a new pair before giving up on Redis (the pair is then kept locally).
_STORE_ATTEMPTS: Final = 3


class SharedTokens:
    """The OAuth pair of one application on one portal, as every process sees it."""

    def __init__(self, link: Link, origin: URL) -> None:
        self.link = link
        self._origin = origin

    async def load(self, seed: OAuthTokens) -> OAuthTokens:
        """
        The pair to start with: Redis's, or *seed*, stored when Redis has none.

        When Redis fails, *seed* is used; a later refresh will need Redis anyway.
        """
        try:
            stored = await self.link.read_tokens(seed)
        except RedisDown as exc:
            log.warning("Redis is unreachable (%s): starting with the tokens given", exc)
            return seed
        return self._trusted(stored, seed)

    async def refresh(
        self,
        refused: str,
        current: OAuthTokens,
        run: Callable[[OAuthTokens], Awaitable[OAuthTokens]],
    ) -> tuple[OAuthTokens, bool]:
        """
        A pair newer than the access token *refused*: ``(pair, refreshed here)``.

        *run* refreshes a pair through the OAuth server; it is called under the lock,
        at most once, and only while Redis still holds *refused* (or nothing).

        Raises:
            CoordinatorUnavailable: Redis could not be reached, or the lock was not freed.
        """
        coordinator = self.link.coordinator
        deadline = asyncio.get_running_loop().time() + 3 * coordinator.lock_ttl
        token = secrets.token_hex(16)
        try:
            while True:
                stored = await self.link.read_tokens()
                if stored is not None and stored.access_token != refused:
                    return self._trusted(stored, current), False
                if await self.link.try_lock(token):
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise CoordinatorUnavailable(
                        "another process held the token-refresh lock in Redis for too long",
                        method="oauth.token",
                    )
                await asyncio.sleep(_POLL * (0.5 + random.random()))
            # Inside the lock: the holder before us may have stored a pair just now.
            stored = await self.link.read_tokens()
        except RedisDown as exc:
            await self._release(token)  # if the lock was taken (it expires otherwise)
            raise _unavailable(exc) from None
        if stored is not None and stored.access_token != refused:
            await self._release(token)
            return self._trusted(stored, current), False
        try:
            tokens = await run(current if stored is None else self._trusted(stored, current))
        except BaseException:
            await self._release(token)
            raise
        await self._store(token, tokens)
        return tokens, True

    async def _store(self, token: str, tokens: OAuthTokens) -> None:
        # The OAuth server has rotated the pair: until Redis has it, only this process can
        # reach the portal. Try again briefly; the lock keeps the others waiting meanwhile.
        for attempt in range(_STORE_ATTEMPTS):
            try:
                await self.link.store_tokens(token, tokens)
            except RedisDown as exc:
                if attempt + 1 == _STORE_ATTEMPTS:
                    log.error(  # noqa: TRY400 -- the traceback says nothing more
                        "Redis is unreachable (%s): the refreshed OAuth tokens were not "
                        "stored; other processes will fail to refresh until they are "
                        "given them (on_token_refresh has them)",
                        exc,
                    )
                    return
                await asyncio.sleep(_POLL * (attempt + 1))
            else:
                return

    async def _release(self, token: str) -> None:
        with contextlib.suppress(RedisDown):  # it expires by itself
            await self.link.release(token)

    def _trusted(self, stored: OAuthTokens | None, fallback: OAuthTokens) -> OAuthTokens:
        # The pair in Redis decides the tokens, never where they are sent: an endpoint on
        # another host would carry them away.
        if stored is None:
            return fallback
        if stored.client_endpoint.origin() != self._origin:
            return OAuthTokens(
                access_token=stored.access_token,
                refresh_token=stored.refresh_token,
                expires_at=stored.expires_at,
                client_endpoint=fallback.client_endpoint,
            )
        return stored


def _unavailable(exc: RedisDown) -> CoordinatorUnavailable:
    return CoordinatorUnavailable(
        f"the OAuth token must be refreshed but Redis is unreachable ({exc}); a refresh "
        "outside the shared lock could lock the other processes out, so none was made",
        method="oauth.token",
    )
