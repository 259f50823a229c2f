"""
The client-side limits: ``RateLimit``, the leaky bucket and the operating-time budget.

Both are small objects with an injected clock that answer "how many seconds to wait";
the session does the sleeping. A request is booked when it is dispatched, not when its
answer arrives, so a burst of concurrent calls cannot overrun the portal's bucket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import attrs

from ._protocol import TimeInfo
from ._validate import check_int, check_number

__all__ = ["LeakyBucket", "OperatingBudget", "RateLimit"]


@attrs.frozen
class RateLimit:
    """
    The portal's limits, which the client keeps to on its side.

    Args:
        rate: requests per second the portal's counter drains (limits.md: 2, Enterprise 5).
        burst: the counter's threshold (limits.md: 50, Enterprise 250). ``math.inf`` for
            *rate* turns the client-side bucket off (an on-premise portal without limits).
        max_in_flight: requests on the wire at once at the most.
        operating_limit: seconds of processing one method may use per 10 minutes
            (limits.md: 480 on the cloud).
        operating_headroom: the share of *operating_limit* at which a method is paused
            until the portal's window moves on, before the portal blocks it.
    """

    rate: float = 2.0
    burst: int = 50
    max_in_flight: int = 8
    operating_limit: float = 480.0
    operating_headroom: float = 0.9

    def __attrs_post_init__(self) -> None:
        for name in ("rate", "operating_limit", "operating_headroom"):
            check_number(name, getattr(self, name))
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate!r}")
        for name in ("burst", "max_in_flight"):
            check_int(name, getattr(self, name), minimum=1)
        if not self.operating_limit > 0:
            raise ValueError("operating_limit must be > 0")
        if not 0 < self.operating_headroom <= 1:
            raise ValueError("operating_headroom must be in (0, 1]")


class LeakyBucket:
    """
    The portal's request counter, mirrored as a reservation-based leaky bucket (GCRA).

    ``reserve()`` books a slot at once and says how long to wait before sending. A margin
    is kept back from *burst*: the portal counts a request when it arrives, and requests
    sent in order arrive with some jitter. The margin is one slot, or the slots the portal
    drains in ``MARGIN_SECONDS`` when that is more (at 200/s one slot is only 5 ms).
    """

    MARGIN_SECONDS = 0.05

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._interval = 0.0 if math.isinf(rate) else 1.0 / rate
        margin = 1 if math.isinf(rate) else max(1, math.ceil(rate * self.MARGIN_SECONDS))
        self._tolerance = max(burst - 1 - margin, 0) * self._interval
        self._clock = clock
        self._tat = -math.inf  # the theoretical arrival time of the next request

    @property
    def interval(self) -> float:
        """Seconds the portal takes to drain one request (GCRA's emission interval)."""
        return self._interval

    @property
    def tolerance(self) -> float:
        """How far ahead of now the bucket may be booked before a request must wait."""
        return self._tolerance

    def reserve(self) -> float:
        """Book one request; return the seconds to wait before sending it."""
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        return max(0.0, tat - self._tolerance - now)

    def penalize(self) -> None:
        """The portal said QUERY_LIMIT_EXCEEDED: take its counter as full from now on."""
        self._tat = max(self._tat, self._clock() + self._tolerance + self._interval)


# operating_reset_at is a whole Unix second (limits.md), so the window may move on up to a
# second after it: wait that second too rather than be refused.
RESET_GRAIN = 1.0


@attrs.define
class _Usage:
    operating: float
    reset_at: float | None


class OperatingBudget:
    """
    Each method's operating time as the portal last reported it (``time.operating``).

    When a method has used *headroom* of its limit, ``delay()`` asks callers to wait for
    ``operating_reset_at``, so the portal never has to answer 429 OPERATION_TIME_LIMIT
    (limits.md, "Resource Intensity Limits").
    """

    def __init__(
        self, limit: float, headroom: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._threshold = limit * headroom
        self._clock = clock
        self._usage: dict[str, _Usage] = {}

    def record(self, method: str, info: TimeInfo | None) -> None:
        """Remember what an answer's ``time`` block says of *method*."""
        if info is None or info.operating is None:
            return
        self._usage[method.lower()] = _Usage(info.operating, info.operating_reset_at)

    def reset_at(self, method: str) -> float | None:
        """When the portal's window for *method* next moves on, if it ever said."""
        usage = self._usage.get(method.lower())
        return None if usage is None else usage.reset_at

    def delay(self, method: str) -> float:
        """Seconds to wait before calling *method*: zero unless it is near its limit."""
        usage = self._usage.get(method.lower())
        if usage is None or usage.reset_at is None or usage.operating < self._threshold:
            return 0.0
        return max(0.0, usage.reset_at + RESET_GRAIN - self._clock())
