"""
``RefreshLock``: a grant's token-refresh lock in Redis, once a process has taken it.

The lock is a random token with an expiry (``lock_ttl``); while the refresh runs, ``keep``
extends it every quarter of that, since a refresh may outlast it. It ends in one of three
ways, each a compare-and-set on the token: ``release``, ``refuse`` (the OAuth server refused
the grant's refresh token: the grant is marked) or ``store`` (the new pair stored as the lock
is released, in one step). Redis going down never leaves a lock for ever: it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from ..models import OAuthTokens
from ._redis import Link, RedisDown

__all__ = ["POLL", "RefreshLock"]

log = logging.getLogger("bitrix_images.coordinator")

# How often a process waiting for another's refresh looks again (jittered), and the pause
# between two attempts to store a new pair.
POLL: Final = 0.05
# Attempts to store a new pair before giving up on Redis (the pair is then kept locally).
_STORE_ATTEMPTS: Final = 3


class RefreshLock:
    """The lock of grant *lineage*, held with *token* (see the module's docstring)."""

    def __init__(self, link: Link, lineage: str, token: str) -> None:
        self.link = link
        self.lineage = lineage
        self.token = token
        self._heartbeat: asyncio.Future[None] | None = None

    def keep(self) -> None:
        """Extend the lock every quarter of its TTL until it ends."""
        self._heartbeat = asyncio.ensure_future(self._beat())

    async def release(self) -> None:
        await self._stop()
        with contextlib.suppress(RedisDown):  # it expires by itself
            await self.link.release(self.lineage, self.token)

    async def refuse(self, refresh_token: str) -> None:
        """Mark the grant refused (its *refresh_token* was), releasing the lock."""
        await self._stop()
        with contextlib.suppress(RedisDown):  # the lock expires by itself
            await self.link.refuse(self.lineage, self.token, refresh_token)

    async def store(self, tokens: OAuthTokens, owner: tuple[str, str] | None) -> bool | None:
        """
        Store the new pair and release the lock: whether Redis took it (``False``: an
        answer for another user than the grant's), ``None`` when Redis stayed unreachable.
        """
        await self._stop()
        # The OAuth server has rotated the pair: until Redis has it, only this process can
        # reach the portal. Try again briefly; the lock keeps the others waiting meanwhile.
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.link.store_tokens(self.lineage, self.token, tokens, owner)
            except RedisDown as exc:
                if attempt == _STORE_ATTEMPTS:
                    log.error(  # noqa: TRY400 -- the traceback says nothing more
                        "Redis is unreachable (%s): the refreshed OAuth tokens were not "
                        "stored; other processes will fail to refresh until they are "
                        "given them (on_token_refresh has them)",
                        exc,
                    )
                    return None
                await asyncio.sleep(POLL * attempt)

    async def _stop(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # raises only if this task itself is cancelled meanwhile

    async def _beat(self) -> None:
        period = self.link.coordinator.lock_ttl / 4
        while True:
            await asyncio.sleep(period)
            try:
                held = await self.link.extend(self.lineage, self.token)
            except RedisDown:
                continue  # it may still be ours at the next beat
            if not held:
                log.warning(
                    "the token-refresh lock in Redis expired while the refresh ran: another "
                    "process may refresh the same token"
                )
                return
