"""
``SharedLimits``: a client's pacing through the coordinator, or on its own when Redis fails.

While Redis answers, every request is booked in the shared bucket, after the operating
time every process reported for its methods allows it. When Redis does not answer, the
client paces on its own ``LeakyBucket`` (its own ``OperatingBudget`` reserves every request
either way), logs one WARNING for the outage, and counts each request so paced. Its own
bucket starts the outage as full: the other processes are still sending, and the portal's
503s, which are retried, teach it the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from .._wire.limits import RESET_GRAIN, LeakyBucket, RateLimit
from .._wire.protocol import TimeInfo
from ._redis import Link, Pacing, RedisDown

__all__ = ["SharedLimits"]

log = logging.getLogger("bitrix_images.coordinator")

# How long past its answer a method's reported operating time stays in Redis: the portal's
# window is ten minutes (limits.md, "Resource Intensity Limits").
_REPORT_KEEP = 600.0


class _Counts(Protocol):
    coordinator_fallbacks: int


class SharedLimits:
    """
    The request bucket and operating-time budget of one client with a coordinator.

    Args:
        link: the credential's shared state.
        rate_limit: the limits the client keeps to.
        bucket: the client's own bucket, used while Redis fails.
        hold: seconds a reservation of operating time outlives its request at the most
            (the request timeout): a process that dies never settles its reservations.
        stats: the client's counters; ``coordinator_fallbacks`` counts each round trip
            that failed so that the client's own limits decided.
    """

    def __init__(
        self,
        link: Link,
        rate_limit: RateLimit,
        bucket: LeakyBucket,
        *,
        hold: float,
        stats: _Counts | None = None,
    ) -> None:
        self.link = link
        self._bucket = bucket
        self._threshold = rate_limit.operating_limit * rate_limit.operating_headroom
        self._hold = hold
        self._down = False
        self._fallbacks = 0
        self._penalty = False  # a QUERY_LIMIT_EXCEEDED Redis has not heard of yet
        self._stats = stats

    async def pace(self, methods: Iterable[str]) -> Pacing:
        """
        Book one request of *methods*; say how long to wait.

        When the reason is ``"operating"`` nothing was booked: wait, then ask again.
        """
        methods = tuple(methods)
        try:
            pacing = await self.link.pace(
                methods,
                interval=self._bucket.interval,
                tolerance=self._bucket.tolerance,
                threshold=self._threshold,
                grain=RESET_GRAIN,
                hold=self._hold,
                penalize=self._penalty,
            )
        except RedisDown as exc:
            # The client's own operating budget has let the request go already.
            self._fell_back(exc)
            return Pacing(self._bucket.reserve(), "bucket", None)
        self._penalty = False
        self._back()
        return pacing

    def penalize(self) -> None:
        """
        The portal said QUERY_LIMIT_EXCEEDED: the shared bucket (and ours) is full.

        Redis learns it with this client's next round trip (``pace`` or ``flush``).
        """
        self._bucket.penalize()
        self._penalty = True

    async def flush(self) -> None:
        """Tell Redis of a penalty now, before this client sleeps on its backoff."""
        if not self._penalty:
            return
        try:
            await self.link.pace(
                (),
                interval=self._bucket.interval,
                tolerance=self._bucket.tolerance,
                threshold=self._threshold,
                grain=RESET_GRAIN,
                hold=self._hold,
                penalize=True,
            )
        except RedisDown as exc:
            self._fell_back(exc)
        else:
            self._penalty = False
            self._back()

    async def settle(
        self,
        ticket: str | None,
        reports: Mapping[str, TimeInfo | None],
        seconds: Mapping[str, float] | None = None,
    ) -> None:
        """
        Tell Redis each method's ``time`` block, and drop the request's reservation.

        *seconds*: what the request cost per method, as this client's budget learned it from
        the figures (a batch's commands together); Redis reserves that much for each request
        in flight. Without it, the answer's ``processing`` (one command's, for a batch).
        """
        if ticket is None and not any(i and i.operating is not None for i in reports.values()):
            return
        try:
            await self.link.settle(ticket, reports, _REPORT_KEEP, seconds)
        except RedisDown as exc:
            # The reservation expires by itself after *hold* seconds.
            self._fell_back(exc)

    @property
    def fallbacks(self) -> int:
        """Round trips that failed, so that the client's own limits decided."""
        return self._fallbacks

    def _fell_back(self, exc: RedisDown) -> None:
        self._fallbacks += 1
        if self._stats is not None:
            self._stats.coordinator_fallbacks += 1
        self._penalty = False  # stale by the time Redis answers again
        if not self._down:
            self._down = True
            self._bucket.penalize()
            log.warning(
                "Redis is unreachable (%s): this client keeps to its own limits until it "
                "answers again",
                exc,
            )

    def _back(self) -> None:
        if self._down:
            self._down = False
            log.warning("Redis answers again: the limits are shared again")
