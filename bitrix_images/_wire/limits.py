"""
The client-side limits: ``RateLimit``, the leaky bucket and the operating-time budget.

Both are small objects with an injected clock that answer "how many seconds to wait";
the pacer (``_calls.pacer``) does the sleeping. A request is booked when it is dispatched,
not when its answer arrives, so a burst of concurrent calls cannot overrun the portal's
bucket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import attrs

from .protocol import TimeInfo
from .validate import check_int, check_number

__all__ = ["LeakyBucket", "MethodBudget", "OperatingBudget", "RateLimit", "Reservation", "decide"]


@attrs.frozen
class RateLimit:
    """
    The portal's limits, which the client keeps to on its side.

    Args:
        rate: requests per second the portal's counter drains (limits.md: 2, Enterprise 5).
        burst: the counter's threshold (limits.md: 50, Enterprise 250). ``math.inf`` for
            *rate* turns the client-side bucket off (an on-premise portal without limits).
        max_in_flight: requests on the wire at once at the most.
        operating_limit: seconds of processing one method may use per window
            (limits.md: 480 on the cloud; an on-premise portal's own setting, 420 by default
            when its limiter is on).
        operating_headroom: the share of *operating_limit* the client lets its requests
            reserve; a request whose reservation would cross it waits for the window to move on.
        operating_window: the length of the portal's window in seconds (limits.md: ten
            one-minute baskets, 600). Only a test portal with a compressed window differs.
    """

    rate: float = 2.0
    burst: int = 50
    max_in_flight: int = 8
    operating_limit: float = 480.0
    operating_headroom: float = 0.9
    operating_window: float = attrs.field(default=600.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        for name in ("rate", "operating_limit", "operating_headroom", "operating_window"):
            check_number(name, getattr(self, name))
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate!r}")
        for name in ("burst", "max_in_flight"):
            check_int(name, getattr(self, name), minimum=1)
        if not self.operating_limit > 0:
            raise ValueError("operating_limit must be > 0")
        if not 0 < self.operating_headroom <= 1:
            raise ValueError("operating_headroom must be in (0, 1]")
        if not 0 < self.operating_window < math.inf:
            raise ValueError("operating_window must be a finite number > 0")


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


# operating_reset_at is a whole Unix second (limits.md) and the docs do not say which way it
# is rounded: the basket may leave up to a second after it (rounded down) or at it (rounded
# up). The later of the two is the one that cannot be refused: wait that second too.
RESET_GRAIN = 1.0
# Sums of seconds are compared with a threshold: 0.1 * 9 must fit under 0.9.
_EPSILON = 1e-9
# The client's own spending is kept in slots of a hundredth of the window: few enough to
# stay small (a shared store holds them too), fine enough to lose at most 1% of the window.
SLOTS = 100


@attrs.define
class MethodBudget:
    """
    What the client knows of one method's operating time: small and explicit, so that it can
    live anywhere (this process, or a shared store); :func:`decide` and the methods below
    are the logic.

    ``operating``/``seen``/``reset_at``/``finish``: the figure the portal last reported,
    when (local Unix time), when its oldest basket leaves (limits.md) and the portal's own
    time of the answer, which orders answers that overtake each other. ``cost``: the learned seconds
    per unit of work (one call, or one command of a batch), from the figures' increases
    (``high``, ``increase``, ``units``). ``outstanding``: seconds reserved by requests in
    flight, ``pending`` how many. ``known``: a request of the method has been processed, so
    the portal's reporting (or silence) is known. ``spent``: this client's own answered
    seconds by slot of the window, so that they are known to leave the window one window
    after they were booked, and ``sent``: when the first of each slot's requests was sent
    (the figure surely holds them while their basket cannot have left). ``probe_at``: when
    one request may go to learn what the reset gave back; ``refused_at``: the figure before
    the portal refused the method, which is taken as spent until a request of it succeeds
    again.
    """

    operating: float = 0.0
    seen: float = -math.inf
    reset_at: float | None = None
    probe_at: float | None = None
    finish: float | None = None
    cost: float | None = None
    high: float | None = None
    increase: float = 0.0
    units: float = 0.0
    outstanding: float = 0.0
    pending: int = 0
    known: bool = False
    refused_at: float | None = None
    spent: dict[int, float] = attrs.Factory(dict)
    sent: dict[int, float] = attrs.Factory(dict)


def _forget(state: MethodBudget, before: float) -> None:
    """Stop counting on this client's own seconds sent at or before *before* to leave the
    figure: it may no longer hold them."""
    for index in [i for i, at in state.sent.items() if at <= before]:
        del state.sent[index]
        state.spent.pop(index, None)


def _expire(state: MethodBudget, now: float, window: float) -> None:
    """Let go of what has surely left the portal's window by *now*."""
    if now >= state.seen + window:
        # Every basket the report counted opened before it, so all have left by now; and
        # so have this client's own seconds that it counted.
        state.operating = 0.0
        _forget(state, state.seen)
    slot = window / SLOTS
    for index in [i for i in state.spent if (i + 1) * slot + window <= now]:
        # A basket opens no later than the bookings in it and leaves one window after it
        # opened (limits.md), so this client's own seconds are gone by then.
        state.operating = max(0.0, state.operating - state.spent.pop(index))
        state.sent.pop(index, None)


def decide(
    state: MethodBudget, units: float, now: float, *, threshold: float, window: float
) -> float:
    """
    Seconds until a request of *units* may reserve its cost of *state*'s method; 0: go now;
    ``math.inf``: not before a request in flight is answered (the caller also looks again
    whenever one is, as that may change the answer).

    The first request of a method goes alone: its answer tells whether the portal reports
    the method's time, and what it costs. Then a request may go when what is used, plus the
    reservations in flight, plus its own cost stays within *threshold*; or when nothing is
    in use (one request alone is never held); or, once the portal's oldest basket has left,
    as the one probe that learns the new figure.
    """
    if not state.known:
        return 0.0 if state.pending == 0 else math.inf
    _expire(state, now, window)
    cost = (state.cost or 0.0) * units
    used = state.operating + state.outstanding
    if used + cost <= threshold + _EPSILON or used <= _EPSILON:
        return 0.0
    candidates = [math.inf]
    if state.probe_at is not None and state.pending == 0:
        if now >= state.probe_at:
            return 0.0
        candidates.append(state.probe_at)
    # When this client's own seconds leave the window, and when the whole report has.
    slot = window / SLOTS
    left = state.operating
    for index in sorted(state.spent):
        left -= state.spent[index]
        if left + state.outstanding + cost <= threshold + _EPSILON:
            candidates.append((index + 1) * slot + window)
            break
    if state.seen > -math.inf and state.pending == 0:
        # (With requests in flight, their answers come sooner and say more: wait for them.)
        candidates.append(state.seen + window)
    return max(min(candidates) - now, 0.0)


@attrs.frozen
class Reservation:
    """Seconds booked per method for one request, and the units of work behind them."""

    costs: Mapping[str, float]
    units: Mapping[str, float]
    at: float = -math.inf  # when it was reserved (sent no sooner)


class OperatingBudget:
    """
    Each method's operating time, paced by reservation (limits.md, "Resource Intensity
    Limits"): a request reserves its method's learned cost when it is dispatched, and waits
    while the reservation would cross ``limit * headroom``, so requests in flight cannot
    overshoot together and the portal never has to answer 429 OPERATION_TIME_LIMIT.

    The figures are booked where the portal reports them: the ``time`` block under the
    method called (``batch`` for a batch) and each command's ``result_time`` under its own
    method. Which of them the portal bills (the docs: the commands; b24jssdk PR #539: the
    batch) does not matter: each method is paced by its own figure. A method the portal
    never reports on (an on-premise portal with its limiter off) is never held.
    """

    def __init__(
        self,
        limit: float,
        headroom: float,
        window: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limit = limit
        self._threshold = limit * headroom
        self._window = window
        self._clock = clock
        self._methods: dict[str, MethodBudget] = {}

    def state(self, method: str) -> MethodBudget:
        """The budget of *method* (created empty on first use)."""
        key = method.lower()
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = MethodBudget()
        return found

    def reserve(
        self, units: Mapping[str, float], *, force: bool = False
    ) -> tuple[float, Reservation | None]:
        """
        Reserve a request spending *units* of work per method, or say how long to wait.

        Returns ``(0, reservation)`` when the request may go, else ``(seconds, None)``:
        wait, then ask again. *force* reserves at once: a request that has waited out a
        refusal goes as the probe.
        """
        now = self._clock()
        wait = 0.0
        for method, count in units.items() if not force else ():
            state = self.state(method)
            wait = max(
                wait,
                decide(state, count, now, threshold=self._threshold, window=self._window),
            )
        if wait > 0:
            return wait, None
        costs = {}
        for method, count in units.items():
            state = self.state(method)
            cost = (state.cost or 0.0) * count
            used = state.operating + state.outstanding
            if used + cost > self._threshold + _EPSILON and used > _EPSILON:
                state.probe_at = None  # this request is the probe: one at a time
            costs[method] = cost
            state.outstanding += cost
            state.pending += 1
        return 0.0, Reservation(costs, dict(units), now)

    def settle(
        self,
        reservation: Reservation,
        reports: Mapping[str, TimeInfo | None],
        *,
        spent: bool,
    ) -> None:
        """
        The request is over: release its reservation and book what the portal reported.

        *spent* says whether the portal may have processed it (an error after processing
        still costs time); then its reserved cost is booked as this client's own spending.
        """
        now = self._clock()
        for method, cost in reservation.costs.items():
            state = self.state(method)
            state.pending = max(0, state.pending - 1)
            # Nothing in flight: nothing reserved (no rounding left over from the sums).
            state.outstanding = max(0.0, state.outstanding - cost) if state.pending else 0.0
            info = reports.get(method)
            reported = info is not None and info.operating is not None
            if spent and state.refused_at is not None:
                # It went through: the method is no longer blocked. Its figure is the one
                # now reported, or else the one from before the refusal.
                state.operating = state.refused_at if state.cost else 0.0
                state.refused_at = None
                state.high = None if reported else state.high
            if info is not None and info.operating is not None:
                self._learn(state, info, reservation.units[method], now)
            if spent:
                state.known = True
                # Reserved before the cost was known: book what it is now thought to be.
                booked = cost or (state.cost or 0.0) * reservation.units[method]
                index = int(now // (self._window / SLOTS))
                state.spent[index] = state.spent.get(index, 0.0) + booked
                state.sent[index] = min(state.sent.get(index, math.inf), reservation.at)

    def seconds(self, reservation: Reservation) -> dict[str, float]:
        """What *reservation*'s request is now thought to have cost, per method whose cost
        is known: its units at the learned cost (a batch's fifty commands, not one)."""
        return {
            method: cost * units
            for method, units in reservation.units.items()
            if (cost := self.state(method).cost) is not None
        }

    def _learn(self, state: MethodBudget, info: TimeInfo, units: float, now: float) -> None:
        operating = info.operating
        assert operating is not None  # noqa: S101 -- checked by the caller
        finish, last = info.finish, state.finish
        ordered = finish is not None and last is not None
        if finish is not None and last is not None and finish < last:
            return  # an answer overtaken by a later one: its figure is older
        moved = info.operating_reset_at is not None and (
            state.reset_at is None or info.operating_reset_at > state.reset_at
        )
        _expire(state, now, self._window)
        stale = now >= state.seen + self._window
        # A later figure below the last one: baskets have left the portal's window.
        dropped = ordered and state.high is not None and operating < state.high
        # The oldest basket may have left since the last figure even though the reset did
        # not move (two baskets' resets can round to the same second): then the figure's
        # growth is no sample of the cost, which it would understate.
        leaving = state.reset_at is not None and now >= state.reset_at - RESET_GRAIN
        if state.high is None or moved or stale or dropped or leaving:
            # A first figure, or the window moved on: a new baseline, not a sample. Until a
            # sample exists, the cost is taken as the lowest such figure over its units: a
            # figure counts its own request, so the cost is no higher (pessimistic still,
            # when another application's time is in it).
            if state.units == 0 and units > 0:
                bound = operating / units
                state.cost = bound if state.cost is None else min(state.cost, bound)
        elif operating > state.high or ordered:
            # The figure grew by this request's cost. Without the portal's ``finish`` to
            # order answers, only a figure higher than any seen counts, so answers out of
            # order make the estimate high (slower, never over the limit).
            state.increase += max(operating - state.high, 0.0)
            state.units += units
            if state.units > 0:
                state.cost = state.increase / state.units
        if ordered or state.high is None or operating > state.high:
            state.high = operating
        if ordered or moved or stale or operating >= state.operating:
            # Own seconds the new figure may no longer hold must not be taken off it again
            # when they leave. Those sent within a basket of a window ago are surely still
            # counted: their basket opened at most one basket before them, whether the
            # portal opens one at a first call or on the clock. Whether the older ones are
            # is unknown (the figure may have fallen by them, or grown by more): the figure
            # keeps them until a later one says otherwise.
            _forget(state, now - self._window + self._window / 10)
            state.operating = operating
            state.seen = now
        if info.finish is not None:
            state.finish = info.finish
        if info.operating_reset_at is not None and moved:
            state.reset_at = info.operating_reset_at
            state.probe_at = info.operating_reset_at + RESET_GRAIN

    def refused(self, method: str) -> None:
        """
        The portal answered OPERATION_TIME_LIMIT for *method*: take its budget as spent
        until the window moves on, so that other requests wait instead of being refused.
        """
        now = self._clock()
        state = self.state(method)
        _expire(state, now, self._window)
        state.known = True
        if state.refused_at is None:
            state.refused_at = state.operating
        state.operating = max(state.operating, self._limit)
        state.seen = now
        if state.reset_at is not None and state.reset_at + RESET_GRAIN > now:
            state.probe_at = state.reset_at + RESET_GRAIN
        else:
            # No reset known (or it has passed): nothing says when the window moves on, so
            # the retry's own backoff paces the method, one request at a time.
            state.probe_at = now + min(self._window / 10, RESET_GRAIN)

    def reset_at(self, method: str) -> float | None:
        """When the portal's window for *method* next moves on, if it ever said."""
        state = self._methods.get(method.lower())
        return None if state is None else state.reset_at
