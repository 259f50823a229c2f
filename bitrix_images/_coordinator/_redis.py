"""
``RedisCoordinator`` and its per-credential ``Link``: every Redis round trip of the SDK.

redis-py is imported only here, and only when a coordinator is built, so that the core
package runs without it. Each operation is one Lua script (``_lua``); each round trip is
bounded by the coordinator's *timeout*, and any failure of Redis (refused, reset, slow,
restarted and still loading, out of memory) comes out as ``RedisDown`` for the caller to
fall back on its own limits.

After a failure, Redis is left alone for a back-off period (a circuit breaker: one second,
doubling up to thirty while it keeps failing): a Redis that accepts connections and never
answers would otherwise cost the whole *timeout* on every request. The first round trip after
the back-off is the probe; the others keep skipping Redis until it has answered.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

import attrs
from yarl import URL

from .._wire.protocol import TimeInfo
from ..models import OAuthTokens
from . import _lua
from ._keys import Keys, fingerprint

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Grant", "Link", "Pacing", "RedisCoordinator", "RedisDown"]

_SCRIPTS: Final = {
    "pace": _lua.PACE,
    "settle": _lua.SETTLE,
    "resolve": _lua.RESOLVE,
    "read_tokens": _lua.READ_TOKENS,
    "try_lock": _lua.TRY_LOCK,
    "extend": _lua.EXTEND,
    "release": _lua.RELEASE,
    "holder": _lua.HOLDER,
    "store_tokens": _lua.STORE_TOKENS,
    "refuse": _lua.REFUSE,
}

# The circuit breaker's back-off after a failed round trip: the first, and the longest.
BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 30.0
# How long a grant and the aliases of its refresh tokens are kept after their last refresh:
# a refresh token lives 180 days (settings/oauth/auto-renewal.md).
GRANT_KEEP: Final = 180 * 86_400


class RedisDown(Exception):
    """Redis did not answer in time, or answered with an error: share nothing this time."""


@attrs.frozen
class Pacing:
    """What the shared limits said of one request: wait *wait* seconds for *reason*."""

    wait: float
    reason: str  # "bucket" (booked: send after the wait) or "operating" (ask again after it)
    ticket: str | None  # the operating-time reservation to settle, when booked


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite")
    return float(value)


class RedisCoordinator:
    """
    Limits and OAuth tokens shared by every client built with it, through one Redis.

    Clients on the same Redis and *namespace* share, for the same portal, one request bucket;
    for the same portal and application (or webhook), one operating-time budget per method;
    and for the same grant (one user's authorisation of an OAuth application), one token pair
    refreshed once per expiry under a lock. ``pip install bitrix_images[redis]``.

    Args:
        redis: a ``redis.asyncio.Redis`` client (redis-py >= 5); it is borrowed, never closed.
        namespace: the prefix of every key, to keep apart deployments that share a Redis.
        timeout: seconds one Redis round trip may take before the client paces on its own
            limits instead (keep it well under the portal's pace: a slow Redis must not
            slow every request).
        lock_ttl: seconds after which a token-refresh lock whose holder died expires. A
            holder extends its lock every quarter of it while its refresh runs, so a refresh
            may take longer (up to its own timeout).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str = "bitrix_images",
        timeout: float = 1.0,
        lock_ttl: float = 30.0,
    ) -> None:
        # Imported here, not at the top: only a user who builds a coordinator needs redis.
        from redis.exceptions import RedisError  # noqa: PLC0415 -- optional dependency

        if not hasattr(redis, "register_script"):
            raise TypeError("redis must be a redis.asyncio.Redis client")
        if (
            not isinstance(namespace, str)
            or not namespace
            or any(c in namespace for c in "{} \t\r\n")
        ):
            raise ValueError("namespace must be a non-empty str without braces or spaces")
        self.redis = redis
        self.namespace = namespace
        self.timeout = _positive("timeout", timeout)
        self.lock_ttl = _positive("lock_ttl", lock_ttl)
        self._errors: tuple[type[BaseException], ...] = (
            RedisError,
            OSError,
            asyncio.TimeoutError,
        )
        self._scripts = {name: redis.register_script(text) for name, text in _SCRIPTS.items()}
        self._backoff = 0.0  # the breaker's current back-off; 0 while Redis answers
        self._skip_until = 0.0  # the loop's clock: no round trip before it (unless forced)

    def link(self, origin: URL, credential: str) -> Link:
        """The shared state of *credential* (see ``_keys``) on the portal at *origin*."""
        return Link(self, Keys.of(self.namespace, origin, credential))

    async def _run(
        self,
        script: str,
        keys: Sequence[str],
        args: Sequence[str | float],
        *,
        force: bool = False,
    ) -> Any:
        """
        One script, bounded by *timeout*; ``RedisDown`` at once while the breaker is open.

        *force* tries Redis even then: storing a pair the OAuth server has just rotated.
        """
        now = asyncio.get_running_loop().time()
        if not force and now < self._skip_until:
            raise RedisDown("not tried: it failed moments ago")
        if self._backoff:
            # The probe after a back-off: the others skip Redis until it has answered.
            self._skip_until = now + self._backoff
        try:
            result = await asyncio.wait_for(
                self._scripts[script](keys=keys, args=args), timeout=self.timeout
            )
        except self._errors as exc:
            self._backoff = min(BACKOFF_MAX, 2 * self._backoff or BACKOFF_FIRST)
            self._skip_until = asyncio.get_running_loop().time() + self._backoff
            # The type only: redis-py's messages are safe, but a URL-shaped one is not worth
            # the risk in a log line.
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            raise RedisDown(what) from None
        self._backoff = self._skip_until = 0.0
        return result

    def product_lock(self, origin: URL, job: str, product_id: int) -> str:
        """The key of *job*'s lock of one product on the portal at *origin*."""
        return f"{Keys.of(self.namespace, origin, job).portal}:{job}:{product_id}"

    async def try_hold(self, key: str, token: str) -> bool:
        """Take the lock *key* with *token* (the holder's description), for a lock_ttl."""
        return bool(await self._run("try_lock", [key], [token, self._ttl_ms()], force=True))

    async def extend_hold(self, key: str, token: str) -> bool:
        """Move the lock's expiry on by a lock_ttl if *token* still holds it."""
        return bool(await self._run("extend", [key], [token, self._ttl_ms()], force=True))

    async def release_hold(self, key: str, token: str) -> None:
        """Release the lock *key* if *token* still holds it."""
        await self._run("release", [key], [token], force=True)

    async def holder(self, key: str) -> str | None:
        """The token the lock *key* was taken with, or ``None`` when it is free."""
        return _text(await self._run("holder", [key], [], force=True))

    def _ttl_ms(self) -> int:
        return max(1, math.ceil(self.lock_ttl * 1000))

    def __repr__(self) -> str:
        return f"RedisCoordinator(namespace={self.namespace!r})"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class Link:
    """The round trips of one portal + credential; every failure is ``RedisDown``."""

    def __init__(self, coordinator: RedisCoordinator, keys: Keys) -> None:
        self.coordinator = coordinator
        self.keys = keys

    async def pace(
        self,
        methods: Iterable[str],
        *,
        interval: float,
        tolerance: float,
        threshold: float,
        grain: float,
        hold: float,
        penalize: bool = False,
    ) -> Pacing:
        """
        Book one request in the shared bucket and budget, or say how long to wait.

        With *penalize*, the bucket is first taken as full (the portal said
        QUERY_LIMIT_EXCEEDED to this process since its last round trip). With *penalize*
        and no *methods*, that is all: nothing is booked.
        """
        methods = sorted({m.lower() for m in methods})
        ticket = secrets.token_hex(8)
        keys = [self.keys.bucket]
        for method in methods:
            keys += [self.keys.operating(method), self.keys.held(method)]
        args: list[str | float] = [interval, tolerance, threshold, grain, hold, ticket]
        args.append(("1" if methods else "only") if penalize else "0")
        reason, wait, *reserved = await self.coordinator._run("pace", keys, args)
        booked = _text(reason) == "bucket"
        return Pacing(
            float(_text(wait) or 0.0),
            "bucket" if booked else "operating",
            ticket if booked and reserved and reserved[0] else None,
        )

    async def settle(
        self,
        ticket: str | None,
        reports: Mapping[str, TimeInfo | None],
        keep: float,
        seconds: Mapping[str, float] | None = None,
    ) -> None:
        """
        Record what an answer said of each method's operating time; drop the reservation.

        *reports* maps each method the request spent to its ``time`` block (or ``None``);
        *seconds*, what the request cost each method (else its ``processing``).
        """
        keys: list[str] = []
        args: list[str | float] = [ticket or "", keep]
        for method, report in reports.items():
            keys += [self.keys.operating(method), self.keys.held(method)]
            info = report or TimeInfo()
            reported = info.operating is not None
            args += [
                _number(info.operating),
                _number(info.operating_reset_at if reported else None),
                _number((seconds or {}).get(method, info.processing)),
            ]
        if keys:
            await self.coordinator._run("settle", keys, args)

    async def resolve(self, refresh_token: str) -> str:
        """The lineage of the grant *refresh_token* belongs to (its own when Redis has none)."""
        print_ = fingerprint(refresh_token)
        keep = GRANT_KEEP * 1000
        lineage = await self.coordinator._run("resolve", [self.keys.alias(print_)], [print_, keep])
        return _text(lineage) or print_

    async def read_tokens(self, lineage: str, seed: OAuthTokens | None = None) -> Grant | None:
        """The grant's stored pair; *seed* is stored first when there is none."""
        args: list[str | float] = ["", "", "", ""] if seed is None else _token_fields(seed)
        args.append(GRANT_KEEP * 1000)
        stored = await self.coordinator._run("read_tokens", [self.keys.grant(lineage)], args)
        return _grant_of(stored)

    async def try_lock(self, lineage: str, token: str) -> bool:
        """Take the grant's refresh lock with *token*, expiring after the lock_ttl."""
        return bool(
            await self.coordinator._run(
                "try_lock", [self.keys.lock(lineage)], [token, self._ttl_ms()]
            )
        )

    async def extend(self, lineage: str, token: str) -> bool:
        """Move the lock's expiry on by a lock_ttl if *token* still holds it."""
        return bool(
            await self.coordinator._run(
                "extend", [self.keys.lock(lineage)], [token, self._ttl_ms()], force=True
            )
        )

    async def release(self, lineage: str, token: str) -> None:
        """Release the grant's refresh lock if *token* still holds it."""
        await self.coordinator._run("release", [self.keys.lock(lineage)], [token], force=True)

    async def store_tokens(
        self, lineage: str, token: str, tokens: OAuthTokens, owner: tuple[str, str] | None
    ) -> bool:
        """
        Store a new pair of the grant, note *owner* (member_id, user_id) on its first
        refresh, and release the lock *token* holds, in one step. ``False`` when *owner* is
        not the grant's: nothing was stored.
        """
        member, user = owner or ("", "")
        keys = [
            self.keys.grant(lineage),
            self.keys.lock(lineage),
            self.keys.alias(fingerprint(tokens.refresh_token)),
        ]
        args = [token, *_token_fields(tokens), member, user, lineage, GRANT_KEEP * 1000]
        result = await self.coordinator._run("store_tokens", keys, args, force=True)
        return _text(result) != "other"

    async def refuse(self, lineage: str, token: str, refresh_token: str) -> None:
        """Mark the grant refused if *refresh_token* is still its own; release the lock."""
        await self.coordinator._run(
            "refuse",
            [self.keys.grant(lineage), self.keys.lock(lineage)],
            [token, refresh_token],
            force=True,
        )

    def _ttl_ms(self) -> int:
        return max(1, math.ceil(self.coordinator.lock_ttl * 1000))


@attrs.frozen
class Grant:
    """A grant as Redis holds it: its pair, whether the OAuth server refused it, its owner."""

    tokens: OAuthTokens
    refused: bool
    owner: tuple[str, str] | None  # member_id, user_id of its first refresh


def _token_fields(tokens: OAuthTokens) -> list[str | float]:
    return [
        tokens.access_token,
        tokens.refresh_token,
        repr(tokens.expires_at.timestamp()),
        str(tokens.client_endpoint),
    ]


def _grant_of(stored: object) -> Grant | None:
    """The grant read from Redis, or ``None`` when there is none or its pair is unusable."""
    if not isinstance(stored, (list, tuple)) or len(stored) != 7:
        return None
    access, refresh, expires, endpoint, refused, member, user = (_text(v) for v in stored)
    if not access or not refresh or not expires or not endpoint:
        return None
    try:
        expires_at = datetime.fromtimestamp(float(expires), timezone.utc)
        url = URL(endpoint)
    except (ValueError, OverflowError, OSError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    tokens = OAuthTokens(
        access_token=access, refresh_token=refresh, expires_at=expires_at, client_endpoint=url
    )
    owner = (member, user) if member is not None and user is not None else None
    return Grant(tokens, refused == "1", owner)
