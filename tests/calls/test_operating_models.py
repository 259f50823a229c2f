"""Operating-time pacing under every basket model a portal may use (issue 24).

The docs settle neither where the ten baskets open ("first-call": at the first call after
the previous basket; "clock": aligned on the clock) nor how ``operating_reset_at`` is rounded
("floor" or "ceil"); a portal bills a batch per command, as a whole, or both. The client
cannot tell, so its pacing must refuse no request under any of the four models in any of
the three billings.

Two kinds of test, neither on the machine's time: the client's budget (``_wire.limits``) against the
portal's own limiter (``testing._limits``) on one simulated clock, with requests in flight
and answers arriving as they would; and a real client against the embedded portal over
loopback, on the portal's clock seam shared with ``instant_retries()``, replaying one
sequence of events. Both assert the portal's refusals and the requests sent (and the
simulation its simulated seconds against the bound).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Literal

import pytest

import bitrix_images as bx
from bitrix_images._wire import clock
from bitrix_images._wire.limits import OperatingBudget, Reservation
from bitrix_images._wire.protocol import TimeInfo
from bitrix_images.testing import FakePortal, instant_retries
from bitrix_images.testing._limits import (
    BASKET_MODELS,
    RESET_ROUNDINGS,
    BasketModel,
    OperatingLimiter,
    ResetRounding,
)

Billing = Literal["inner", "batch", "both"]
BILLINGS: tuple[Billing, ...] = ("inner", "batch", "both")
MODELS = list(itertools.product(BASKET_MODELS, RESET_ROUNDINGS))

LIST = "catalog.productimage.list"
# The compressed window: 1.5 s per 6 s (baskets of 0.6 s), 3 ms a list command.
WINDOW = 6.0
LIMIT = 1.5
COST = 0.003
HEADROOM = 0.9
T0 = 1_800_000_000.0  # a basket edge under the clock model (a multiple of 0.6 s)


class SimClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Simulation:
    """
    One client's budget and one portal's limiter on a simulated clock: *flight* workers each
    send batches of *size* list commands while the budget lets them; a request reaches the
    portal after half *rtt*, which serves requests one at a time (*serve* seconds each) and
    answers after the other half. The portal bills and reports as ``FakePortal`` does
    (``testing/_rest.py``, ``_batch.py``); refused commands go again in a later batch.
    """

    def __init__(
        self,
        model: BasketModel,
        rounding: ResetRounding,
        billing: Billing,
        *,
        phase: float,
        rtt: float,
        serve: float = 0.005,
        flight: int = 8,
        size: int = 50,
    ) -> None:
        self.clock = SimClock(T0 + phase)
        self.portal = OperatingLimiter(LIMIT, WINDOW, self.clock, model=model, rounding=rounding)
        self.budget = OperatingBudget(LIMIT, HEADROOM, WINDOW, self.clock)
        self.billing = billing
        self.rtt, self.serve, self.flight, self.size = rtt, serve, flight, size
        self.refused = 0  # requests and commands the portal refused
        self.requests = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._free = self.clock.now  # when the portal is done with what it serves
        self._todo: list[int] = []  # the batches still to send, by their commands
        self._waiting: set[int] = set()  # workers waiting for a settle or a moment

    def _at(self, when: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), event))

    def run(self, commands: int) -> None:
        self._todo = [self.size] * (commands // self.size)
        for worker in range(self.flight):
            self._at(self.clock.now, functools.partial(self._try, worker))
        while self._events:
            when, _, event = heapq.heappop(self._events)
            self.clock.now = max(self.clock.now, when)
            event()

    def _try(self, worker: int) -> None:
        if not self._todo or worker in self._waiting:
            return
        size = self._todo[0]
        wait, reservation = self.budget.reserve({"batch": size, LIST: size})
        if reservation is None:
            # As the pacer: until the wait is over or a request is settled.
            self._waiting.add(worker)
            if not math.isinf(wait):
                self._at(self.clock.now + wait, functools.partial(self._wake, worker))
            return
        self._todo.pop(0)
        self.requests += 1
        self._at(self.clock.now + self.rtt / 2, lambda: self._arrive(worker, reservation, size))

    def _wake(self, worker: int) -> None:
        if worker in self._waiting:
            self._waiting.discard(worker)
            self._try(worker)

    def _arrive(self, worker: int, reservation: Reservation, size: int) -> None:
        self._free = max(self.clock.now, self._free) + self.serve

        def served() -> None:
            reports, refused = self._process(size)
            self._at(
                self.clock.now + self.rtt / 2,
                lambda: self._answer(worker, reservation, reports, refused),
            )

        self._at(self._free, served)

    def _report(self, method: str) -> TimeInfo:
        used, reset_at = self.portal.report(method)
        return TimeInfo(operating=used, operating_reset_at=reset_at, finish=self.clock.now)

    def _process(self, commands: int) -> tuple[dict[str, TimeInfo] | None, int]:
        """The portal serves one batch: its reports (None: refused whole) and the commands
        it refused."""
        portal, billing = self.portal, self.billing
        if billing != "inner" and portal.blocked("batch"):
            self.refused += 1
            return None, commands
        reports: dict[str, TimeInfo] = {}
        refused = 0
        for _ in range(commands):
            if billing == "batch":
                reports[LIST] = self._report("batch")  # the batch's running figure
            elif portal.blocked(LIST):
                refused += 1
            else:
                portal.book(LIST, COST)
                reports[LIST] = self._report(LIST)
        if billing != "inner":
            portal.book("batch", (commands - refused) * COST)
        reports["batch"] = self._report("batch")
        self.refused += refused
        return reports, refused

    def _answer(
        self,
        worker: int,
        reservation: Reservation,
        reports: dict[str, TimeInfo] | None,
        refused: int,
    ) -> None:
        # As Caller.batch and run_batch: a batch refused whole was not processed; refused
        # commands go again.
        if reports is None:
            self.budget.settle(reservation, {}, spent=False)
            self.budget.refused("batch")
        else:
            self.budget.settle(reservation, reports, spent=True)
            if refused:
                self.budget.refused(LIST)
        if refused:
            self._todo.insert(0, refused)
        for other in [worker, *self._waiting]:
            self._waiting.discard(other)
            self._at(self.clock.now, functools.partial(self._try, other))


def cases() -> Iterator[tuple[float, float]]:
    """Where the basket edges fall (the phase of the start) and how long a round trip is."""
    for phase in (0.0, 0.15, 0.3, 0.45):
        for rtt in (0.002, 0.02, 0.3):
            yield phase, rtt


# 2,500 products through list_many: 50 batches, 7.5 s of operating time, 1.35 s a window
# at the headroom: six windows, and no client can finish before (6 - 1) x 6 s.
BATCHES = 50


@pytest.mark.parametrize("billing", BILLINGS)
@pytest.mark.parametrize(("model", "rounding"), MODELS)
def test_no_refusal_against_the_portals_limiter(
    model: BasketModel, rounding: ResetRounding, billing: Billing
) -> None:
    for phase, rtt in cases():
        run = Simulation(model, rounding, billing, phase=phase, rtt=rtt)
        started = run.clock.now
        run.run(BATCHES * 50)
        assert (run.refused, run.requests) == (0, BATCHES), (phase, rtt)
        if rtt <= 0.02:
            # Simulated seconds, not the machine's: within the 1.25x of the bound
            # on loopback-like round trips. (A round trip of half a basket blurs which
            # basket a request lands in, and the client waits for later figures more often.)
            assert run.clock.now - started <= 1.25 * (6 - 1) * WINDOW, (phase, rtt)


# --- a real client over loopback -----------------------------------------------------------

PATIENT = bx.RetryPolicy(max_attempts=40, initial_delay=0.01, max_delay=0.1, max_wait=600.0)
# The clock is frozen (instant_retries(frozen=True)): it moves on only when told or by what
# the clients wait, never with the real time a step takes, so a loaded machine replays the
# same timeline (with the real time in it, four suites at once on two cores made steps
# overrun their 2 s baskets and the portal refuse).
LONG_WINDOW = 20.0
GRAIN = LONG_WINDOW / 10


async def until(moment: float) -> None:
    """Move the shared clock on to *moment* (instantly: ``instant_retries``)."""
    await clock.current().sleep(max(moment - clock.now(), 0.0))


async def listed(client: bx.BitrixClient, first: int, last: int) -> list[int]:
    ids = range(first, last + 1)
    return sorted([image.product_id or 0 async for image in client.images.list_many(ids)])


@pytest.mark.parametrize("billing", BILLINGS)
@pytest.mark.parametrize(("model", "rounding"), MODELS)
async def test_own_seconds_that_left_with_a_basket_are_not_taken_off_twice(
    model: BasketModel, rounding: ResetRounding, billing: Billing
) -> None:
    # The client's batches share a basket with an earlier one; the basket leaves before
    # their own time does, while another application's spending makes the next figure grow.
    # That figure no longer holds them: the client must not take them off it again when
    # their own time is up, or it sends a window's worth too many.
    with instant_retries(frozen=True):
        async with (
            FakePortal(
                products=850,
                images_per_product=1,
                rate=None,
                operating_limit=LIMIT,
                operating_window=LONG_WINDOW,
                operating_cost={LIST: COST},
                operating_billing=billing,
                operating_baskets=model,
                operating_reset_rounding=rounding,
                clock=clock.now,  # the portal's time is the clients' (instant) time
            ) as portal,
            bx.BitrixClient.from_webhook(
                portal.webhook_url,
                rate_limit=bx.RateLimit(
                    rate=math.inf, operating_limit=LIMIT, operating_window=LONG_WINDOW
                ),
                retry=PATIENT,
            ) as client,
        ):
            edge = (math.floor(clock.now() / GRAIN) + 2) * GRAIN
            await until(edge + 0.02)
            found = await listed(client, 1, 50)  # the first batch goes alone: 0.15 s
            found += await listed(client, 51, 400)  # seven more, in its basket: 1.2 s
            assert clock.now() < edge + GRAIN  # (the clock is frozen: see LONG_WINDOW)
            await until(edge + LONG_WINDOW + 0.1)  # the basket has left (either model)...
            for method in {"inner": [LIST], "batch": ["batch"], "both": [LIST, "batch"]}[billing]:
                portal.spend(method, 1.0)  # ...and another application spends 1 s
            found += await listed(client, 401, 450)  # the figure grows: 1.15 s
            await until(edge + LONG_WINDOW + GRAIN - 0.1)  # the seven batches' own time is up
            found += await listed(client, 451, 850)  # eight batches
    assert found == list(range(1, 851))
    assert portal.counters.operating_refused == 0
    assert portal.counters.by_status[429] == 0
    assert portal.counters.requests == 1 + 7 + 1 + 8
