"""The portal's two limits: the request-rate leaky bucket and per-method operating time.

Both take an injected clock (seconds, ``time.time`` by default) so tests can drive them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs

__all__ = ["LeakyBucket", "OperatingLimiter"]


@attrs.define
class LeakyBucket:
    """DOCS ``limits.md``: each request adds 1 to a counter that drains ``rate`` per second;
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


@attrs.define
class _Basket:
    start: float
    total: float


@attrs.define
class OperatingLimiter:
    """DOCS ``limits.md`` §Resource Intensity Limits: per-method time is summed in 10
    baskets; a basket opens at the first call after the previous one's span and leaves the
    window ``window`` seconds after it opened. When a method's sum reaches ``limit`` its calls
    answer 429 OPERATION_TIME_LIMIT until enough baskets leave the window.
    """

    limit: float
    window: float
    clock: Callable[[], float]
    _baskets: dict[str, deque[_Basket]] = attrs.field(factory=dict)

    def _live(self, method: str, now: float) -> deque[_Basket]:
        baskets = self._baskets.setdefault(method, deque())
        while baskets and baskets[0].start + self.window <= now:
            baskets.popleft()
        return baskets

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
        if not baskets or now - baskets[-1].start >= self.window / 10:
            baskets.append(_Basket(now, cost))
        else:
            baskets[-1].total += cost

    def report(self, method: str) -> tuple[float, int]:
        """``(operating, operating_reset_at)`` for the ``time`` block of an answer."""
        now = self.clock()
        baskets = self._live(method, now)
        oldest = baskets[0].start if baskets else now
        return sum(b.total for b in baskets), int(oldest + self.window)
