"""
``Pacer``: when a request may go, under the client-side limits.

Every request (a call's, a batch's, a download's) reserves its operating time in the
``OperatingBudget`` and then a slot in the ``LeakyBucket`` (or, with a coordinator, in the
bucket shared through Redis) before it is sent, and settles what it reserved when it is
over. The decisions are the pure objects' of ``_wire.limits``; this only waits, on the
clock in force (``_wire.clock``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping

from .._coordinator import Link, SharedLimits
from .._wire import clock
from .._wire.limits import LeakyBucket, OperatingBudget, RateLimit, Reservation
from .._wire.protocol import TimeInfo
from .._wire.stats import ClientStats

__all__ = ["Pacer"]

log = logging.getLogger("bitrix_images")


class Pacer:
    """
    The leaky bucket and the operating-time budget of one client.

    Args:
        rate_limit: the client-side limits.
        stats: the client's counters (``throttle_wait``, ``held``).
        link: the coordinator's shared state for this portal and credential, or ``None``.
        hold: seconds a reservation in Redis outlives its request at the most.
    """

    def __init__(
        self, rate_limit: RateLimit, stats: ClientStats, *, link: Link | None, hold: float
    ) -> None:
        self.stats = stats
        self.bucket = LeakyBucket(rate_limit.rate, rate_limit.burst, clock.monotonic)
        self.budget = OperatingBudget(
            rate_limit.operating_limit,
            rate_limit.operating_headroom,
            rate_limit.operating_window,
            clock.now,
        )
        # With a coordinator, the request bucket and the reported operating time are shared
        # through Redis (this process's own bucket is the fallback); the operating-time
        # reservations of this process stay in the budget as well.
        self.shared = (
            None
            if link is None
            else SharedLimits(link, rate_limit, self.bucket, hold=hold, stats=stats)
        )
        self._tickets: dict[int, str] = {}  # id(reservation) -> its reservation in Redis
        self._settled_future: asyncio.Future[None] | None = None

    async def pace(self, spends: Mapping[str, float], *, probe: bool = False) -> Reservation:
        """
        Wait until the operating-time budget and then the bucket let a request spending
        *spends* (units of work per method) go; return what it reserved. A *probe* (a retry
        that has waited out OPERATION_TIME_LIMIT) skips the budget's wait.
        """
        while True:
            operating, reservation = self.budget.reserve(spends, force=probe)
            if reservation is not None:
                break
            log.debug("%s: waiting %.3fs for the operating time", _names(spends), operating)
            # Wait for the window to move on, or for a request in flight to be answered,
            # which may free or teach what is needed.
            timeout = None if math.isinf(operating) else operating
            with self.stats.holding():
                self.stats.throttle_wait += await clock.current().wait(self._settled, timeout)
        try:
            if self.shared is not None:
                await self._pace_shared(spends, reservation)
            else:
                await self._wait_bucket(spends, self.bucket.reserve())
        except BaseException:
            self.settle(reservation, {}, spent=False)
            raise
        return reservation

    async def _wait_bucket(self, spends: Mapping[str, float], delay: float) -> None:
        if delay > 0:
            log.debug("%s: waiting %.3fs for the rate limit", _names(spends), delay)
            self.stats.throttle_wait += delay
            with self.stats.holding():
                await clock.current().sleep(delay)

    async def _pace_shared(self, spends: Mapping[str, float], reservation: Reservation) -> None:
        """
        Book the request in the coordinator's bucket, after the operating time every
        process reported allows it; remember its reservation there for ``finish``.
        """
        assert self.shared is not None  # noqa: S101 -- called only with a coordinator
        while True:
            pacing = await self.shared.pace(spends)
            if pacing.reason == "bucket":
                break
            log.debug("%s: waiting %.3fs for the operating time", _names(spends), pacing.wait)
            self.stats.throttle_wait += pacing.wait
            with self.stats.holding():
                await clock.current().sleep(pacing.wait)
        if pacing.ticket is not None:
            self._tickets[id(reservation)] = pacing.ticket
        await self._wait_bucket(spends, pacing.wait)

    async def finish(
        self, reservation: Reservation, reports: Mapping[str, TimeInfo | None], *, spent: bool
    ) -> None:
        """
        The request is over: settle its reservation with what the portal reported, and tell
        the coordinator. *spent*: the portal may have processed it (so it cost time).
        """
        self.settle(reservation, reports, spent=spent)
        if self.shared is not None:
            every = {**dict.fromkeys(reservation.costs), **reports}  # each method reserved
            await self.shared.settle(self._tickets.pop(id(reservation), None), every)

    def abandon(self, reservation: Reservation) -> None:
        """The request was cancelled on the wire: maybe processed; its Redis ticket expires
        by itself."""
        self.settle(reservation, {}, spent=True)
        self._tickets.pop(id(reservation), None)

    def settle(
        self, reservation: Reservation, reports: Mapping[str, TimeInfo | None], *, spent: bool
    ) -> None:
        """Settle a request's reservation and wake whoever waits on the operating time."""
        self.budget.settle(reservation, reports, spent=spent)
        waiting, self._settled_future = self._settled_future, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    @property
    def _settled(self) -> asyncio.Future[None]:
        """Done when the next request's operating time is settled."""
        if self._settled_future is None or self._settled_future.done():
            self._settled_future = asyncio.get_running_loop().create_future()
        return self._settled_future

    # --- what the portal's refusals teach ------------------------------------------------

    def penalize(self) -> None:
        """QUERY_LIMIT_EXCEEDED (limits.md: the portal's counter is full): the bucket is
        full, ours and, with the next round trip, everyone's."""
        if self.shared is not None:
            self.shared.penalize()
        else:
            self.bucket.penalize()

    def refused(self, methods: Iterable[str]) -> None:
        """OPERATION_TIME_LIMIT: *methods* are blocked until their window moves on."""
        for method in methods:
            self.budget.refused(method)

    def reset_at(self, methods: Iterable[str]) -> float | None:
        """The latest ``operating_reset_at`` the portal reported for *methods*, if any."""
        resets = [r for m in methods if (r := self.budget.reset_at(m)) is not None]
        return max(resets, default=None)

    async def backoff(self, seconds: float) -> None:
        """Sleep a retry's backoff; the others hold back during it too (a coordinator)."""
        if self.shared is not None:
            await self.shared.flush()
        with self.stats.holding():
            await clock.current().sleep(seconds)


def _names(spends: Mapping[str, float]) -> str:
    return "/".join(sorted(spends))
