"""The portal's two limits: the request-rate leaky bucket and per-method operating time.

Both take an injected clock (seconds, ``time.time`` by default) so tests can drive them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Literal

import attrs

__all__ = [
    "BASKET_MODELS",
    "RESET_ROUNDINGS",
    "BasketModel",
    "OperatingLimiter",
    "PortalBucket",
    "ResetRounding",
]


@attrs.define
class PortalBucket:
    """The portal's request counter (the client paces itself by ``_wire.limits.LeakyBucket``).

    DOCS ``limits.md``: each request adds 1 to a counter that drains ``rate`` per second;
    a request that would push it past ``burst`` is refused with 503 QUERY_LIMIT_EXCEEDED.
    A refused request adds nothing (it was not processed).
    """

    rate: float
    burst: int
    clock: Callable[[], float]
    level: float = 0.0
    _stamp: float | None = None

    def _drain(self) -> float:
        now = self.clock()
        if self._stamp is not None:
            self.level = max(0.0, self.level - (now - self._stamp) * self.rate)
        self._stamp = now
        return now

    def empty(self) -> None:
        self.level = 0.0
        self._stamp = None

    def try_acquire(self) -> bool:
        """Book one request; False (and nothing booked) when the bucket is full."""
        self._drain()
        if self.level + 1 > self.burst:
            return False
        self.level += 1
        return True


BasketModel = Literal["first-call", "clock"]
ResetRounding = Literal["floor", "ceil"]
BASKET_MODELS = ("first-call", "clock")
RESET_ROUNDINGS = ("floor", "ceil")


@attrs.define
class _Basket:
    start: float
    total: float


@attrs.define
class OperatingLimiter:
    """DOCS ``limits.md`` §Resource Intensity Limits: per-method time is summed in 10
    baskets of ``window / 10`` seconds; a basket leaves the window ``window`` seconds after it
    opened. When a method's sum reaches ``limit`` its calls answer 429 OPERATION_TIME_LIMIT
    until enough baskets leave the window.

    The docs settle neither where a basket opens nor how ``operating_reset_at`` is rounded
    (issue 24 measured a portal that differs from our first guess), so both are options:
    ``model`` "first-call" opens a basket at the first call after the previous one's span,
    "clock" aligns the ten baskets on the clock (a basket is ``[k * window/10, (k+1) *
    window/10)``); ``rounding`` "floor" or "ceil" turns the second at which the oldest basket
    with usage leaves into the integer ``operating_reset_at``.
    """

    limit: float
    window: float
    clock: Callable[[], float]
    model: BasketModel = "first-call"
    rounding: ResetRounding = "floor"
    _baskets: dict[str, deque[_Basket]] = attrs.field(factory=dict)

    def _live(self, method: str, now: float) -> deque[_Basket]:
        baskets = self._baskets.setdefault(method, deque())
        while baskets and baskets[0].start + self.window <= now:
            baskets.popleft()
        return baskets

    def _opening(self, now: float, last: _Basket | None) -> float | None:
        """The start of the basket a call at *now* opens, or None to add to *last*."""
        grain = self.window / 10
        if self.model == "clock":
            start = math.floor(now / grain) * grain
            return None if last is not None and last.start == start else start
        return now if last is None or now - last.start >= grain else None

    def clear(self) -> None:
        self._baskets.clear()

    def used(self, method: str) -> float:
        """Seconds booked by ``method`` within the window."""
        return sum(b.total for b in self._live(method, self.clock()))

    def blocked(self, method: str) -> bool:
        return self.used(method) >= self.limit

    def book(self, method: str, cost: float) -> None:
        now = self.clock()
        baskets = self._live(method, now)
        start = self._opening(now, baskets[-1] if baskets else None)
        if start is None:
            baskets[-1].total += cost
        else:
            baskets.append(_Basket(start, cost))

    def report(self, method: str) -> tuple[float, int]:
        """``(operating, operating_reset_at)`` for the ``time`` block of an answer."""
        now = self.clock()
        baskets = self._live(method, now)
        oldest = baskets[0].start if baskets else now
        leaves = oldest + self.window
        reset_at = math.ceil(leaves) if self.rounding == "ceil" else math.floor(leaves)
        return sum(b.total for b in baskets), reset_at
