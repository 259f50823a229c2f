"""Operating time (limits.md, "Resource Intensity Limits"), paced by reservation.

The pure budget runs on an injected clock; the loopback tests run every billing the portal
may use (the docs: the commands; b24jssdk PR #539: the batch; or both) against each of the
three states of a self-hosted portal's ``time`` block (b24jssdk issue #459), on a window
compressed to half a second. They assert refusals and exact results, never timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Literal

import aiohttp
import pytest

import bitrix_images as bx
from bitrix_images._wire.limits import OperatingBudget, Reservation, decide
from bitrix_images._wire.protocol import TimeInfo
from bitrix_images.testing import FakePortal
from bitrix_images.testing.__main__ import parse_args, serve

Billing = Literal["inner", "batch", "both"]
Report = Literal["full", "operating", "none"]
BILLINGS: tuple[Billing, ...] = ("inner", "batch", "both")
REPORTS: tuple[Report, ...] = ("full", "operating", "none")

LIST = "catalog.productimage.list"
GET = "catalog.productimage.get"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(operating: float, reset_at: float | None = None) -> TimeInfo:
    return TimeInfo(operating=operating, operating_reset_at=reset_at)


def go(budget: OperatingBudget, units: dict[str, float]) -> Reservation:
    wait, reservation = budget.reserve(units)
    assert wait == 0
    assert reservation is not None
    return reservation


def held(budget: OperatingBudget, units: dict[str, float]) -> float:
    wait, reservation = budget.reserve(units)
    assert reservation is None
    return wait


# --- the pure budget ----------------------------------------------------------------------


def test_a_method_never_reported_is_never_held() -> None:
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=10.0, clock=Clock())
    first = go(budget, {"m": 1})
    # The first request goes alone: until it is answered, nothing is known of the method.
    assert held(budget, {"m": 1}) == math.inf
    budget.settle(first, {"m": None}, spent=True)
    for _ in range(100):
        go(budget, {"m": 1})


def test_reservations_in_flight_cannot_overshoot_together() -> None:
    clock = Clock()
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=10.0, clock=clock)
    budget.settle(go(budget, {"m": 1}), {"m": report(0.1, 1010)}, spent=True)
    assert budget.state("m").cost == pytest.approx(0.1)
    # 0.1 used; eight more reservations of 0.1 reach 0.9, the ninth would cross it.
    flying = [go(budget, {"m": 1}) for _ in range(8)]
    assert held(budget, {"m": 1}) == pytest.approx(10.0)  # the report leaves the window
    for number, reservation in enumerate(flying, start=2):
        budget.settle(reservation, {"m": report(0.1 * number, 1010)}, spent=True)
    assert budget.state("m").cost == pytest.approx(0.1)
    assert budget.state("m").outstanding == 0
    assert held(budget, {"m": 1}) > 0


def test_own_spending_leaves_one_window_after_it_was_booked() -> None:
    clock = Clock()
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=10.0, clock=clock)
    budget.settle(go(budget, {"m": 1}), {"m": report(0.3)}, spent=True)
    clock.now += 3
    budget.settle(go(budget, {"m": 1}), {"m": report(0.7)}, spent=True)
    assert budget.state("m").cost == pytest.approx(0.4)
    # At 1003 the first 0.3 (booked at 1000) leaves by 1010.1 (a slot is 0.1 s), and then
    # 0.4 + 0.4 fits.
    assert 7.0 <= held(budget, {"m": 1}) <= 7.1
    clock.now = 1010.1
    go(budget, {"m": 1})


def test_after_the_reset_one_probe_learns_what_came_back() -> None:
    clock = Clock()
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=600.0, clock=clock)
    budget.settle(go(budget, {"m": 1}), {"m": report(0.85, 1030)}, spent=True)
    # Most of the figure is another application's: only the reset can free it.
    assert held(budget, {"m": 1}) == pytest.approx(31.0)
    clock.now = 1031.0
    probe = go(budget, {"m": 1})
    # One probe at a time: the others wait for its answer.
    assert held(budget, {"m": 1}) == math.inf
    budget.settle(probe, {"m": report(0.3, 1090)}, spent=True)
    assert budget.state("m").operating == pytest.approx(0.3)
    go(budget, {"m": 1})


def test_a_report_older_than_the_window_says_nothing() -> None:
    clock = Clock()
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=10.0, clock=clock)
    budget.settle(go(budget, {"m": 1}), {"m": report(0.95)}, spent=True)
    assert held(budget, {"m": 1}) == pytest.approx(10.0)
    clock.now += 10.0
    go(budget, {"m": 1})


def test_an_answer_out_of_order_does_not_lower_the_figure() -> None:
    clock = Clock()
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=60.0, clock=clock)
    budget.settle(go(budget, {"m": 1}), {"m": report(0.1, 1060)}, spent=True)
    a, b = go(budget, {"m": 1}), go(budget, {"m": 1})
    budget.settle(b, {"m": report(0.3, 1060)}, spent=True)
    budget.settle(a, {"m": report(0.2, 1060)}, spent=True)
    assert budget.state("m").operating == pytest.approx(0.3)
    # Out of order the learned cost is too high (slower), never too low.
    assert budget.state("m").cost == pytest.approx(0.2)


def test_no_cost_sample_where_a_basket_may_have_left_unseen() -> None:
    # Two baskets' resets can round to the same second (issue 24: the docs do not say how
    # operating_reset_at is rounded, and baskets may be shorter than a second): within a
    # second of the reset, a figure that grew may have lost a basket on the way, and its
    # growth would understate the cost.
    clock = Clock()
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=10.0, clock=clock)
    budget.settle(go(budget, {"m": 1}), {"m": report(0.1, 1010)}, spent=True)
    budget.settle(go(budget, {"m": 1}), {"m": report(0.2, 1010)}, spent=True)
    assert budget.state("m").cost == pytest.approx(0.1)
    clock.now = 1009.5
    budget.settle(go(budget, {"m": 1}), {"m": report(0.25, 1010)}, spent=True)
    assert budget.state("m").cost == pytest.approx(0.1)


def test_a_batch_reserves_under_the_batch_and_under_its_commands() -> None:
    clock = Clock()
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=60.0, clock=clock)
    first = go(budget, {"batch": 50, LIST: 50})
    budget.settle(first, {"batch": report(0.0, 1060), LIST: report(0.1, 1060)}, spent=True)
    assert budget.state(LIST).cost == pytest.approx(0.002)
    assert budget.state("batch").cost == 0
    second = go(budget, {"batch": 50, LIST: 50})
    assert second.costs == {"batch": 0, LIST: pytest.approx(0.1)}


def test_a_refusal_holds_the_method_until_the_reset() -> None:
    clock = Clock()
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=600.0, clock=clock)
    budget.settle(go(budget, {"m": 1}), {"m": report(0.1, 1100)}, spent=True)
    refused = go(budget, {"m": 1})
    budget.settle(refused, {}, spent=False)
    budget.refused("m")
    assert budget.reset_at("m") == 1100
    assert held(budget, {"m": 1}) == pytest.approx(101.0)
    # Without a known reset, the retry's own backoff paces it: a short hold.
    budget.refused("n")
    assert held(budget, {"n": 1}) == pytest.approx(1.0)
    assert budget.reset_at("n") is None


def test_decide_on_an_explicit_state() -> None:
    # The logic is a function of a small state, wherever that state lives.
    budget = OperatingBudget(limit=1.0, headroom=0.9, window=10.0, clock=Clock())
    state = budget.state("m")
    state.known = True
    state.cost = 0.5
    state.operating = 0.5
    state.seen = 995.0
    assert decide(state, 1, 1000.0, threshold=0.9, window=10.0) == pytest.approx(5.0)
    assert decide(state, 1, 1005.0, threshold=0.9, window=10.0) == 0


def test_rate_limit_carries_the_window() -> None:
    assert bx.RateLimit().operating_window == 600.0
    assert bx.RateLimit(operating_window=5.0).operating_window == 5.0


# --- over loopback ------------------------------------------------------------------------

WINDOW = 0.5
PATIENT = bx.RetryPolicy(max_attempts=40, initial_delay=0.01, max_delay=0.1, max_wait=30.0)


def limits(limit: float) -> bx.RateLimit:
    return bx.RateLimit(rate=math.inf, operating_limit=limit, operating_window=WINDOW)


@contextlib.asynccontextmanager
async def portal_and_client(
    billing: Billing, state: Report, *, limit: float | None, cost: object, products: int
) -> AsyncIterator[tuple[FakePortal, bx.BitrixClient]]:
    async with (
        FakePortal(
            products=products,
            images_per_product=1,
            rate=None,
            operating_limit=limit,
            operating_window=WINDOW,
            operating_cost=cost,  # type: ignore[arg-type]  # a float or a mapping
            operating_billing=billing,
            operating_report=state,
        ) as portal,
        bx.BitrixClient.from_webhook(
            portal.webhook_url, rate_limit=limits(limit or 1.0), retry=PATIENT
        ) as client,
    ):
        yield portal, client


async def run_list_many(client: bx.BitrixClient, products: int) -> list[int]:
    return [
        image.product_id or 0 async for image in client.images.list_many(range(1, products + 1))
    ]


async def run_list(client: bx.BitrixClient, products: int) -> list[int]:
    async def one(product_id: int) -> list[int]:
        return [image.product_id or 0 async for image in client.images.list(product_id)]

    found = await asyncio.gather(*(one(p) for p in range(1, products + 1)))
    return [p for ids in found for p in ids]


async def run_call(client: bx.BitrixClient, products: int) -> list[int]:
    async def one(product_id: int) -> int:
        result = await client.call(
            "catalog.productImage.get", {"productId": product_id, "id": product_id}
        )
        return int(result["productImage"]["productId"])

    return list(await asyncio.gather(*(one(p) for p in range(1, products + 1))))


async def run_download(client: bx.BitrixClient, products: int, dest: Path) -> list[int]:
    images = [image async for image in client.images.list_many(range(1, products + 1))]
    return await download_all(client, images, dest)


async def download_all(
    client: bx.BitrixClient, images: list[bx.ProductImage], dest: Path
) -> list[int]:
    async def one(image: bx.ProductImage) -> int:
        path = await client.images.download(image, dest / f"{image.id}.png")
        assert path.stat().st_size > 0
        return image.product_id or 0

    return list(await asyncio.gather(*(one(image) for image in images)))


# Each list command costs 4 ms: a batch of 50, 0.2 s, against a limit of 0.5 s per 0.5 s
# window (0.45 s with the headroom): 150 products take two windows whoever pays.
BATCH_PRODUCTS = 150
BATCH_COST = 0.004
# Single calls cost 0.1 s: eight take two windows.
CALL_PRODUCTS = 8
CALL_COST = 0.1


@pytest.mark.parametrize("state", REPORTS)
@pytest.mark.parametrize("billing", BILLINGS)
async def test_list_many_is_paced_without_refusals(billing: Billing, state: Report) -> None:
    # A portal that reports nothing has its limiter off (b24jssdk #459): nothing to pace.
    limit = None if state == "none" else 0.5
    async with portal_and_client(
        billing, state, limit=limit, cost=BATCH_COST, products=BATCH_PRODUCTS
    ) as (portal, client):
        found = await run_list_many(client, BATCH_PRODUCTS)
    assert found == list(range(1, BATCH_PRODUCTS + 1))
    assert portal.counters.operating_refused == 0
    assert portal.counters.by_status[429] == 0


@pytest.mark.parametrize("operation", ["list", "call"])
@pytest.mark.parametrize("state", REPORTS)
@pytest.mark.parametrize("billing", BILLINGS)
async def test_single_calls_are_paced_without_refusals(
    billing: Billing, state: Report, operation: str
) -> None:
    limit = None if state == "none" else 0.5
    run = run_list if operation == "list" else run_call
    async with portal_and_client(
        billing, state, limit=limit, cost=CALL_COST, products=CALL_PRODUCTS
    ) as (portal, client):
        found = sorted(await run(client, CALL_PRODUCTS))
    assert found == list(range(1, CALL_PRODUCTS + 1))
    assert portal.counters.operating_refused == 0


@pytest.mark.parametrize("state", REPORTS)
@pytest.mark.parametrize("billing", BILLINGS)
async def test_downloads_without_refusals(billing: Billing, state: Report, tmp_path: Path) -> None:
    # A file carries no time block, so downloads are paced by nothing the portal says; the
    # listing before them is, and what they cost here fits the budget.
    limit = None if state == "none" else 0.5
    cost = {LIST: BATCH_COST, "download": 0.02}
    async with portal_and_client(billing, state, limit=limit, cost=cost, products=20) as (
        portal,
        client,
    ):
        found = sorted(await run_download(client, 20, tmp_path))
    assert found == list(range(1, 21))
    assert len(list(tmp_path.iterdir())) == 20
    assert portal.counters.operating_refused == 0


def billed_methods(billing: Billing, inner: str) -> list[str]:
    return {"inner": [inner], "batch": ["batch"], "both": [inner, "batch"]}[billing]


async def spent_just_before(
    portal: FakePortal, methods: list[str], action: Callable[[int], Awaitable[list[int]]]
) -> list[int]:
    """
    Run *action* with another application spending the whole budget of *methods* just
    before the action's first request of each reaches the portal (``at_next_request``: on a
    loaded machine, spending it before the action could let the half-second window pass
    before that request arrives); the portal must have refused.
    """
    for method in methods:
        portal.spend(method, 0.5, at_next_request=True)
    found = await action(0)
    assert portal.counters.operating_refused > 0
    return found


@pytest.mark.parametrize("operation", ["list_many", "list", "call", "download"])
@pytest.mark.parametrize("state", REPORTS)
@pytest.mark.parametrize("billing", BILLINGS)
async def test_a_budget_spent_by_another_application_is_waited_out(
    billing: Billing, state: Report, operation: str, tmp_path: Path
) -> None:
    # Another application used the whole budget just now: the client cannot know, the
    # portal refuses, and the client waits for the window to move on. The result is exact.
    products = 60 if operation in ("list_many", "download") else 4
    cost = {LIST: 0.002, GET: 0.002, "download": 0.002}
    folder = tmp_path
    async with portal_and_client(billing, state, limit=0.5, cost=cost, products=products) as (
        portal,
        client,
    ):
        if operation == "download":
            images = [image async for image in client.images.list_many(range(1, products + 1))]
            assert len(images) == products

            async def download_round(attempt: int) -> list[int]:
                nonlocal folder
                folder = tmp_path / f"round-{attempt}"
                folder.mkdir()
                return await download_all(client, images, folder)

            found = sorted(await spent_just_before(portal, ["download"], download_round))
        else:
            methods, run = {
                "list_many": (billed_methods(billing, LIST), run_list_many),
                "list": ([LIST], run_list),
                "call": ([GET], run_call),
            }[operation]
            found = sorted(await run(client, products))
            again = await spent_just_before(portal, methods, lambda _: run(client, products))
            assert sorted(again) == found
    assert found == list(range(1, products + 1))
    assert portal.counters.operating_refused > 0
    if operation == "download":
        assert len(list(folder.iterdir())) == products


async def test_a_batch_billed_whole_is_refused_whole() -> None:
    retry = bx.RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.01)
    async with (
        FakePortal(
            products=3,
            rate=None,
            operating_limit=0.5,
            operating_cost=0.2,
            operating_billing="batch",
        ) as portal,
        bx.BitrixClient.from_webhook(
            portal.webhook_url, rate_limit=bx.RateLimit(rate=math.inf), retry=retry
        ) as client,
    ):
        portal.spend("batch", 0.5)
        with pytest.raises(bx.RateLimited) as info:
            _ = [image async for image in client.images.list_many([1, 2, 3])]
    assert info.value.code == "OPERATION_TIME_LIMIT"
    assert portal.counters.by_status[429] == 2
    assert portal.counters.commands[LIST] == 0


async def test_the_portal_bills_a_batch_as_each_portal_does() -> None:
    body = {
        "halt": 0,
        "cmd": {
            "a": "catalog.productImage.list?productId=1",
            "b": "catalog.productImage.list?productId=2",
        },
    }
    seen = {}
    for billing in BILLINGS:
        async with (
            FakePortal(
                products=2, rate=None, operating_cost=0.25, operating_billing=billing
            ) as portal,
            aiohttp.ClientSession() as session,
        ):
            for _ in range(2):
                async with session.post(str(portal.webhook_url) + "batch", json=body) as r:
                    answer = await r.json()
            times = answer["result"]["result_time"]
            seen[billing] = (
                times["a"]["operating"],
                times["b"]["operating"],
                answer["time"]["operating"],
            )
    # The docs: each command under its method, the batch nothing.
    assert seen["inner"] == (0.75, 1.0, 0)
    # b24jssdk PR #539: the batch pays for the whole request, and every command reports
    # the batch's running figure.
    assert seen["batch"] == (0.5, 0.5, 1.0)
    assert seen["both"] == (0.75, 1.0, 1.0)


async def test_the_time_block_in_each_self_hosted_state() -> None:
    blocks = {}
    for state in REPORTS:
        async with (
            FakePortal(products=1, operating_report=state) as portal,
            aiohttp.ClientSession() as session,
        ):
            async with session.post(
                str(portal.webhook_url) + "catalog.productImage.list", json={"productId": 1}
            ) as r:
                blocks[state] = set((await r.json())["time"]) & {"operating", "operating_reset_at"}
    assert blocks == {
        "full": {"operating", "operating_reset_at"},
        "operating": {"operating"},
        "none": set(),
    }


def test_portal_options_are_checked() -> None:
    with pytest.raises(ValueError, match="operating_billing"):
        FakePortal(operating_billing="outer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="operating_report"):
        FakePortal(operating_report="some")  # type: ignore[arg-type]


async def test_the_command_line_takes_the_operating_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parse_args(
        [
            "--products",
            "1",
            "--operating-limit",
            "1",
            "--operating-window",
            "5",
            "--operating-cost",
            "0.5",
            "--operating-billing",
            "batch",
            "--operating-report",
            "operating",
        ]
    )
    assert (args.operating_limit, args.operating_window, args.operating_billing) == (1, 5, "batch")
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(args, stop))
    try:
        url = ""
        while not url:
            await asyncio.sleep(0.01)
            url = capsys.readouterr().out.strip()
        body = {"cmd": {"a": "catalog.productImage.list?productId=1"}}
        async with aiohttp.ClientSession() as session:
            for status in (200, 200, 429):
                async with session.post(url + "batch", json=body) as r:
                    assert r.status == status
                    answer = await r.json()
            assert answer["error"] == "OPERATION_TIME_LIMIT"
    finally:
        stop.set()
        await task
    assert parse_args(["--operating-limit", "0"]).operating_limit == 0
