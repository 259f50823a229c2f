"""
``RedisCoordinator`` and its per-credential ``Link``: every Redis round trip of the SDK.

redis-py is imported only here, and only when a coordinator is built, so that the core
package runs without it. Each operation is one Lua script (``_lua``); each round trip is
bounded by the coordinator's *timeout*, and any failure of Redis (refused, reset, slow,
restarted and still loading, out of memory) comes out as ``RedisDown`` for the caller to
fall back on its own limits.
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
from ._keys import Keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Link", "Pacing", "RedisCoordinator", "RedisDown"]

_SCRIPTS: Final = {
    "pace": _lua.PACE,
    "settle": _lua.SETTLE,
    "read_tokens": _lua.READ_TOKENS,
    "try_lock": _lua.TRY_LOCK,
    "release": _lua.RELEASE,
    "store_tokens": _lua.STORE_TOKENS,
}


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

    Clients on the same Redis and *namespace*, for the same portal and credential, share
    one request bucket, one operating-time budget per method, and (OAuth) one token pair
    refreshed once per expiry under a lock. ``pip install bitrix_images[redis]``.

    Args:
        redis: a ``redis.asyncio.Redis`` client (redis-py >= 5); it is borrowed, never closed.
        namespace: the prefix of every key, to keep apart deployments that share a Redis.
        timeout: seconds one Redis round trip may take before the client paces on its own
            limits instead (keep it well under the portal's pace: a slow Redis must not
            slow every request).
        lock_ttl: seconds after which a token-refresh lock whose holder died expires; a
            refresh must finish within it.
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

    def link(self, origin: URL, credential: str) -> Link:
        """The shared state of *credential* (see ``_keys``) on the portal at *origin*."""
        return Link(self, Keys.of(self.namespace, origin, credential))

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[str | float]) -> Any:
        try:
            return await asyncio.wait_for(
                self._scripts[script](keys=keys, args=args), timeout=self.timeout
            )
        except self._errors as exc:
            # The type only: redis-py's messages are safe, but a URL-shaped one is not worth
            # the risk in a log line.
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            raise RedisDown(what) from None

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
        self, ticket: str | None, reports: Mapping[str, TimeInfo | None], keep: float
    ) -> None:
        """
        Record what an answer said of each method's operating time; drop the reservation.

        *reports* maps each method the request spent to its ``time`` block (or ``None``).
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
                _number(info.processing),
            ]
        if keys:
            await self.coordinator._run("settle", keys, args)

    async def read_tokens(self, seed: OAuthTokens | None = None) -> OAuthTokens | None:
        """The stored pair; *seed* is stored first when there is none."""
        args: list[str | float] = ["", "", "", ""] if seed is None else _token_fields(seed)
        stored = await self.coordinator._run("read_tokens", [self.keys.tokens], args)
        return _tokens_of(stored)

    async def try_lock(self, token: str) -> bool:
        """Take the refresh lock with *token*, expiring after the coordinator's lock_ttl."""
        ttl = max(1, math.ceil(self.coordinator.lock_ttl * 1000))
        return bool(await self.coordinator._run("try_lock", [self.keys.lock], [token, ttl]))

    async def release(self, token: str) -> None:
        """Release the refresh lock if *token* still holds it."""
        await self.coordinator._run("release", [self.keys.lock], [token])

    async def store_tokens(self, token: str, tokens: OAuthTokens) -> None:
        """Store a new pair and release the lock *token* holds, in one step."""
        await self.coordinator._run(
            "store_tokens", [self.keys.tokens, self.keys.lock], [token, *_token_fields(tokens)]
        )


def _token_fields(tokens: OAuthTokens) -> list[str | float]:
    return [
        tokens.access_token,
        tokens.refresh_token,
        repr(tokens.expires_at.timestamp()),
        str(tokens.client_endpoint),
    ]


def _tokens_of(stored: object) -> OAuthTokens | None:
    """The pair read from Redis, or ``None`` when there is none or it is unusable."""
    if not isinstance(stored, (list, tuple)) or len(stored) != 4:
        return None
    access, refresh, expires, endpoint = (_text(v) for v in stored)
    if not access or not refresh or not expires or not endpoint:
        return None
    try:
        expires_at = datetime.fromtimestamp(float(expires), timezone.utc)
        url = URL(endpoint)
    except (ValueError, OverflowError, OSError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return OAuthTokens(
        access_token=access, refresh_token=refresh, expires_at=expires_at, client_endpoint=url
    )
