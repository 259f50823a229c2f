"""The embedded portal's operating-time models (issue 24): where the ten baskets open
(``operating_baskets``) and how ``operating_reset_at`` is rounded
(``operating_reset_rounding``). Driven by the portal's clock seam, never by wall time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from support import FakeClock, call

from bitrix_images.testing import FakePortal
from bitrix_images.testing._limits import OperatingLimiter

LIST = "catalog.productImage.list"
# A start on a basket edge of a 60 s window (baskets of 6 s): 1_000_002 = 6 * 166_667.
T0 = 1_000_002.0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _limiter(clock: FakeClock, **options: str) -> OperatingLimiter:
    return OperatingLimiter(10.0, 60.0, clock, **options)  # type: ignore[arg-type]


def test_first_call_baskets_open_at_a_call() -> None:
    clock = FakeClock(T0 + 5)
    limiter = _limiter(clock)
    limiter.book("m", 3.0)
    clock.advance(2)  # T0 + 7: within 6 s of the basket's first call
    limiter.book("m", 4.0)
    assert limiter.report("m") == (7.0, int(T0 + 5 + 60))
    clock.now = T0 + 60  # the basket opened at T0 + 5 is still inside
    assert limiter.used("m") == 7.0
    clock.now = T0 + 65
    assert limiter.report("m") == (0.0, int(T0 + 65 + 60))


def test_clock_baskets_are_aligned() -> None:
    clock = FakeClock(T0 + 5)
    limiter = _limiter(clock, model="clock")
    limiter.book("m", 3.0)  # basket [T0, T0 + 6)
    clock.advance(2)
    limiter.book("m", 4.0)  # basket [T0 + 6, T0 + 12)
    clock.advance(1)
    limiter.book("m", 1.0)  # the same basket: processing time adds to the current one
    assert limiter.report("m") == (8.0, int(T0 + 60))
    clock.now = T0 + 60  # the first basket leaves on its edge
    assert limiter.report("m") == (5.0, int(T0 + 66))
    clock.now = T0 + 66
    assert limiter.used("m") == 0.0


def test_reset_rounding() -> None:
    clock = FakeClock(T0 + 0.4)
    floor = _limiter(clock)
    ceil = _limiter(clock, rounding="ceil")
    for limiter in (floor, ceil):
        limiter.book("m", 1.0)
    assert floor.report("m") == (1.0, int(T0) + 60)
    assert ceil.report("m") == (1.0, int(T0) + 61)
    # On an exact second both agree.
    clock.now = T0 + 1
    aligned = _limiter(clock, rounding="ceil", model="clock")
    aligned.book("m", 1.0)
    assert aligned.report("m") == (1.0, int(T0) + 60)


@pytest.mark.parametrize(("model", "open_at_60"), [("first-call", 429), ("clock", 200)])
async def test_portal_basket_models(
    session: aiohttp.ClientSession, model: str, open_at_60: int
) -> None:
    clock = FakeClock(T0 + 5)
    async with FakePortal(
        operating_limit=10.0,
        operating_window=60.0,
        operating_cost=5.0,
        operating_baskets=model,  # type: ignore[arg-type]
        rate=None,
        clock=clock,
    ) as portal:
        url = portal.webhook_url / LIST
        _, body = await call(session, url, {"productId": 1})
        clock.now = T0 + 7
        _, body = await call(session, url, {"productId": 1})
        oldest = T0 if model == "clock" else T0 + 5
        assert (body["time"]["operating"], body["time"]["operating_reset_at"]) == (
            10.0,
            int(oldest + 60),
        )
        assert (await call(session, url, {"productId": 1}))[0] == 429
        clock.now = T0 + 60
        assert (await call(session, url, {"productId": 1}))[0] == open_at_60
        clock.now = T0 + 66  # under either model, what is left stays under the limit
        assert (await call(session, url, {"productId": 1}))[0] == 200


@pytest.mark.parametrize(("rounding", "reset_at"), [("floor", T0 + 60), ("ceil", T0 + 61)])
async def test_portal_reset_rounding(
    session: aiohttp.ClientSession, rounding: str, reset_at: float
) -> None:
    clock = FakeClock(T0 + 0.4)
    async with FakePortal(
        operating_cost=1.0,
        operating_reset_rounding=rounding,  # type: ignore[arg-type]
        operating_window=60.0,
        clock=clock,
    ) as portal:
        _, body = await call(session, portal.webhook_url / LIST, {"productId": 1})
        assert body["time"]["operating_reset_at"] == int(reset_at)


def test_model_options_are_checked() -> None:
    with pytest.raises(ValueError, match="operating_baskets"):
        FakePortal(operating_baskets="hourly")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="operating_reset_rounding"):
        FakePortal(operating_reset_rounding="up")  # type: ignore[arg-type]
