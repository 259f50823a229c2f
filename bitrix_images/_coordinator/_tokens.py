"""
``SharedTokens``: one OAuth pair per grant for every process, refreshed once per expiry.

A grant is one user's authorisation of the application; Redis knows it by its lineage
(``_keys``): the refresh token a process is given names it, or, when Redis has seen that
token before as one the grant was refreshed to, the grant it belongs to. So a pair Redis
does not know (another user's, or the application authorised again) starts its own grant and
is never replaced by a stored one, while a process given an older token of a known grant
takes its current pair.

A process whose token the portal refused re-reads its grant; if another process already
stored a newer pair it takes that one. Otherwise it takes the grant's refresh lock (a random
token with an expiry, extended every quarter of it while the refresh runs, released by
compare-and-delete), re-reads once more, refreshes, and stores the new pair while releasing
the lock in one step. The ``member_id`` and ``user_id`` of the grant's first refresh answer
are stored beside it, and an answer for anyone else is never stored in it. A refresh the
OAuth server refused (``invalid_grant``) marks the grant: its pair never wins again, and the
processes waiting on it fail at once instead of being refused one by one.

A process that cannot reach Redis never refreshes: the OAuth server rotates the refresh
token, so a refresh outside the lock could lock every other process out. Waiting for another
process's lock is only polling: ``waiting`` says so, and ``abandon()`` ends it at once (the
client's ``close()`` does, on Ctrl-C or SIGTERM); a refresh already under way is left to
finish, since the OAuth server may have rotated the pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable

from yarl import URL

from ..exceptions import AuthError, CoordinatorUnavailable
from ..models import OAuthTokens
from ._lock import POLL, RefreshLock
from ._redis import Grant, Link, RedisDown

__all__ = ["SharedTokens"]

log = logging.getLogger("bitrix_images.coordinator")

Owner = Callable[[], "tuple[object, object] | None"]


def _no_owner() -> tuple[object, object] | None:
    return None


class SharedTokens:
    """
    The OAuth pair of one grant on one portal, as every process sees it.

    Args:
        link: the application's shared state on the portal.
        origin: the portal; a stored pair never moves the tokens elsewhere.
        owner: the ``member_id`` and ``user_id`` of the last refresh answer, when it had
            them (``OAuthAuth.grantee``).
    """

    def __init__(self, link: Link, origin: URL, owner: Owner = _no_owner) -> None:
        self.link = link
        self._origin = origin
        self._owner = owner
        self.lineage: str | None = None  # the grant, once Redis has named it
        self.waiting = False  # polling for another process's lock: nothing to lose by a cancel
        self._abandoned = False

    async def load(self, seed: OAuthTokens) -> OAuthTokens:
        """
        The pair to start with: the current pair of the grant *seed* belongs to, or *seed*
        itself, stored as a new grant when Redis has never seen its refresh token.

        When Redis fails, *seed* is used; a later refresh will need Redis anyway.
        """
        try:
            self.lineage = await self.link.resolve(seed.refresh_token)
            grant = await self.link.read_tokens(self.lineage, seed)
        except RedisDown as exc:
            log.warning("Redis is unreachable (%s): starting with the tokens given", exc)
            return seed
        if grant is None or grant.refused:
            return seed  # a refused pair never wins; the refresh will say so
        return self._trusted(grant.tokens, seed)

    async def refresh(
        self,
        refused: str,
        current: OAuthTokens,
        run: Callable[[OAuthTokens], Awaitable[OAuthTokens]],
    ) -> tuple[OAuthTokens, bool]:
        """
        A pair newer than the access token *refused*: ``(pair, refreshed here)``.

        *run* refreshes a pair through the OAuth server; it is called under the grant's
        lock, at most once, and only while Redis still holds *refused* (or nothing).

        Raises:
            CoordinatorUnavailable: Redis could not be reached, or the lock was not freed.
            AuthError: the OAuth server refused the grant's refresh token (here or in
                another process), or answered for another user than the grant's.
        """
        token = secrets.token_hex(16)
        lineage, newer = await self._lock(token, refused, current)
        if newer is not None:
            return newer, False
        lock = RefreshLock(self.link, lineage, token)
        # Inside the lock: the holder before us may have stored a pair just now.
        try:
            stored = await self.link.read_tokens(lineage)
            newer = self._newer(stored, refused, current)
        except RedisDown as exc:
            await lock.release()  # it expires otherwise
            raise _unavailable(exc) from None
        except BaseException:
            await lock.release()
            raise
        if newer is not None:
            await lock.release()
            return newer, False
        start = current if stored is None else self._trusted(stored.tokens, current)
        lock.keep()
        try:
            tokens = await run(start)
        except AuthError as error:
            if error.code == "invalid_grant":
                await lock.refuse(start.refresh_token)
            else:
                await lock.release()
            raise
        except BaseException:
            await lock.release()
            raise
        if await lock.store(tokens, _owner(self._owner())) is False:
            await self._foreign(tokens)
        return tokens, True

    async def _lock(
        self, token: str, refused: str, current: OAuthTokens
    ) -> tuple[str, OAuthTokens | None]:
        """
        Take the grant's lock with *token*: ``(lineage, None)``; or, once a pair newer than
        *refused* is stored, ``(lineage, that pair)`` without it. Only polls: cancel at will.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3 * self.link.coordinator.lock_ttl
        self.waiting = True
        try:
            if self.lineage is None:  # Redis was down when the client started
                self.lineage = await self.link.resolve(current.refresh_token)
            lineage = self.lineage
            while True:
                if self._abandoned:
                    # asyncio.wait_for (before 3.12) may swallow a cancel that comes as its
                    # round trip ends: abandon() makes it stick.
                    raise asyncio.CancelledError  # noqa: TRY301 -- handled as any cancel
                newer = self._newer(await self.link.read_tokens(lineage), refused, current)
                if newer is not None:
                    return lineage, newer
                if await self.link.try_lock(lineage, token):
                    return lineage, None
                if loop.time() > deadline:
                    raise CoordinatorUnavailable(
                        "another process held the token-refresh lock in Redis for too long",
                        method="oauth.token",
                    )
                await asyncio.sleep(POLL * (0.5 + random.random()))
        except RedisDown as exc:
            raise _unavailable(exc) from None
        except asyncio.CancelledError:
            if self.lineage is not None:  # the lock may have been taken as the cancel came
                await RefreshLock(self.link, self.lineage, token).release()
            raise
        finally:
            self.waiting = self._abandoned = False

    def abandon(self, refreshing: asyncio.Future[None]) -> None:
        """
        Cancel *refreshing*, the task running ``refresh``, if it is only waiting for another
        process's lock (nothing was sent yet); a refresh under way is left to finish.
        """
        if self.waiting:
            self._abandoned = True
            refreshing.cancel()

    def _newer(self, grant: Grant | None, refused: str, current: OAuthTokens) -> OAuthTokens | None:
        """The grant's pair if it is newer than *refused*; raise if it was refused."""
        if grant is None:
            return None
        if grant.refused:
            raise AuthError(
                "the token refresh was refused: the OAuth server refused this grant's refresh "
                "token (invalid_grant); authorise the application again",
                code="invalid_grant",
                method="oauth.token",
            )
        if grant.tokens.access_token != refused:
            return self._trusted(grant.tokens, current)
        return None

    async def _foreign(self, tokens: OAuthTokens) -> None:
        """The OAuth server answered for another user than the grant's: never share it."""
        # Kept as a grant of its own, so that the rotated pair is not lost.
        with contextlib.suppress(RedisDown):
            await self.link.read_tokens(await self.link.resolve(tokens.refresh_token), tokens)
        raise AuthError(
            "the token refresh answered for another user than the grant's first refresh; "
            "the new pair was not shared with this grant's processes",
            method="oauth.token",
        )

    def _trusted(self, stored: OAuthTokens, fallback: OAuthTokens) -> OAuthTokens:
        # The pair in Redis decides the tokens, never where they are sent: an endpoint on
        # another host would carry them away.
        if stored.client_endpoint.origin() != self._origin:
            return OAuthTokens(
                access_token=stored.access_token,
                refresh_token=stored.refresh_token,
                expires_at=stored.expires_at,
                client_endpoint=fallback.client_endpoint,
            )
        return stored


def _owner(answer: tuple[object, object] | None) -> tuple[str, str] | None:
    """``member_id`` and ``user_id`` as strings, or ``None`` unless the answer had both."""
    if answer is None:
        return None
    member, user = answer
    if isinstance(member, str) and member and isinstance(user, (int, str)) and str(user):
        return member, str(user)
    return None


def _unavailable(exc: RedisDown) -> CoordinatorUnavailable:
    return CoordinatorUnavailable(
        f"the OAuth token must be refreshed but Redis is unreachable ({exc}); a refresh "
        "outside the shared lock could lock the other processes out, so none was made",
        method="oauth.token",
    )
