"""The batch primitive (``_calls.batch.run_batch``, reached through ``Images._run`` and the
commands ``Images`` builds) and ``Images.list_products``, which lists on it: one outcome
per command, each with its own retries; reads resent on any retryable error, writes only
when the portal proves they did not run; a lost answer to a write is "unknown"."""

from __future__ import annotations

import pytest
from support import FAST_RETRY, PNG, webhook_client

import bitrix_images as bx
from bitrix_images._calls.batch import Packing
from bitrix_images.sync.listing import products
from bitrix_images.testing import INTERNAL_SERVER_ERROR, QUERY_LIMIT_EXCEEDED, FakePortal

ADD = "catalog.productImage.add"
DELETE = "catalog.productImage.delete"
LIST = "catalog.productImage.list"
NOT_IN_BATCH = {
    "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
    "error_description": "Method is not allowed for batch usage",
}
BATCH_LENGTH_EXCEEDED = {
    "error": "ERROR_BATCH_LENGTH_EXCEEDED",
    "error_description": "Max batch length exceeded",
}


# --- list_products -------------------------------------------------------------------------


async def test_list_products_gives_each_product_whole_with_its_own_error() -> None:
    async with FakePortal(products=120, images_per_product=2, rate=None) as portal:
        portal.catalog.deny_read(30)
        async with webhook_client(portal) as client:
            listed = [entry async for entry in client.images.list_products(range(1, 122))]
        assert [entry.product_id for entry in listed] == list(range(1, 122))
        for entry in listed:
            if entry.product_id == 30:
                assert isinstance(entry.error, bx.AccessDenied)
                assert entry.images == ()
            elif entry.product_id == 121:  # no such product
                assert isinstance(entry.error, bx.NotFound)
            else:
                assert entry.error is None
                wanted = [i.id for i in portal.catalog.images(entry.product_id)]
                assert [i.id for i in entry.images] == wanted
        # 121 products in three batches: a failed product does not make the others listed
        # again (the listing used to be cut at it and restarted after it).
        assert portal.counters.by_method["batch"] == 3
        assert portal.counters.commands["catalog.productimage.list"] == 121


async def test_list_products_retries_each_command_on_its_own_and_follows_its_pages() -> None:
    portal = FakePortal(products=3, images_per_product=2, rate=None, page_mode="offset")
    async with portal:
        big = portal.catalog.add_product(images=120)
        portal.inject("command_error", times=2, method=LIST, body=QUERY_LIMIT_EXCEEDED)
        async with webhook_client(portal) as client:
            listed = [entry async for entry in client.images.list_products([big, 1, 2, 3])]
            assert client.stats.retries == 2
        assert [len(entry.images) for entry in listed] == [120, 2, 2, 2]
        assert all(entry.error is None for entry in listed)


async def test_list_products_fails_only_the_product_whose_image_is_malformed() -> None:
    async with FakePortal(products=3, images_per_product=1, rate=None) as portal:
        bad = {"id": "x", "name": "b.png", "productId": 2}
        answer = {
            "result": {
                "result": {"p0": {"productImages": []}, "p1": {"productImages": [bad]}},
                "result_error": [],
                "result_total": [],
                "result_next": [],
                "result_time": [],
            }
        }
        portal.inject("error", method="batch", status=200, body=answer)
        async with webhook_client(portal) as client:
            listed = [entry async for entry in client.images.list_products([1, 2, 3])]
    assert [entry.product_id for entry in listed] == [1, 2, 3]
    assert isinstance(listed[1].error, bx.MalformedResponse)
    assert listed[0].error is None
    assert listed[2].error is None
    assert len(listed[2].images) == 1  # the command the answer left out was resent


# --- run_batch: writes ---------------------------------------------------------------------


async def test_a_write_refused_unprocessed_is_resent_and_applied_once() -> None:
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        portal.inject("command_error", times=2, method=ADD, body=QUERY_LIMIT_EXCEEDED)
        async with webhook_client(portal) as client:
            images = client.images
            commands = {f"c{pid}": images._add_command(pid, f"{pid}.png", PNG) for pid in (1, 2)}
            outcomes = await images._run(commands)
        assert all(outcome.ok for outcome in outcomes.values())
        assert [i.name for i in portal.catalog.images(1)] == ["1.png"]
        assert [i.name for i in portal.catalog.images(2)] == ["2.png"]
        assert portal.counters.commands["catalog.productimage.add"] == 4  # 2 refused, 2 run


async def test_a_write_that_failed_after_running_is_not_resent() -> None:
    async with FakePortal(products=1, images_per_product=2, rate=None) as portal:
        doomed = portal.catalog.images(1)[0].id
        portal.inject("command_error", method=DELETE, body=INTERNAL_SERVER_ERROR)
        async with webhook_client(portal) as client:
            outcomes = await client.images._run({"d": client.images._delete_command(1, doomed)})
        (outcome,) = outcomes.values()
        assert isinstance(outcome.error, bx.ServerError)
        assert not outcome.unknown
        assert not outcome.ok
        assert portal.counters.commands["catalog.productimage.delete"] == 1


async def test_a_lost_answer_makes_the_writes_unknown_and_none_is_replayed() -> None:
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        portal.inject("drop", method="batch")
        async with webhook_client(portal) as client:
            images = client.images
            commands = {
                "a": images._add_command(1, "a.png", PNG),
                "b": images._add_command(2, "b.png", PNG),
            }
            outcomes = await images._run(commands)
        assert all(outcome.unknown for outcome in outcomes.values())
        assert all(isinstance(o.error, bx.OutcomeUnknown) for o in outcomes.values())
        # The portal ran them: listing settles what happened; nothing was sent twice.
        assert portal.counters.by_method["batch"] == 1
        assert [i.name for i in portal.catalog.images(1)] == ["a.png"]


async def test_commands_past_the_portals_batch_length_go_again_in_smaller_requests() -> None:
    async with FakePortal(products=4, images_per_product=1, rate=None) as portal:
        ids = [(pid, portal.catalog.images(pid)[0].id) for pid in range(1, 5)]
        portal.inject("command_error", times=2, method=DELETE, body=BATCH_LENGTH_EXCEEDED)
        async with webhook_client(portal) as client:
            commands = {f"c{p}": client.images._delete_command(p, i) for p, i in ids}
            outcomes = await client.images._run(commands)
        assert all(outcome.ok for outcome in outcomes.values())
        assert all(portal.catalog.images(pid) == [] for pid in range(1, 5))
        # Four commands, two refused for length: the two again, in requests of two at most.
        assert portal.counters.by_method["batch"] == 2


async def test_a_read_is_resent_on_a_server_error_until_its_attempts_are_spent() -> None:
    async with FakePortal(products=1, images_per_product=1, rate=None) as portal:
        portal.inject("command_error", times=100, method=LIST, body=INTERNAL_SERVER_ERROR)
        async with webhook_client(portal) as client:
            outcomes = await client.images._run({"l": client.images._list_command(1)})
        (outcome,) = outcomes.values()
        assert isinstance(outcome.error, bx.ServerError)
        assert outcome.error.attempts == FAST_RETRY.max_attempts
        assert portal.counters.commands["catalog.productimage.list"] == FAST_RETRY.max_attempts


def test_the_commands_are_checked_before_any_request() -> None:
    client = bx.BitrixClient.from_webhook("https://example.bitrix24.com/rest/1/abc/")
    images = client.images
    with pytest.raises(ValueError, match="not a JPEG"):
        images._add_command(1, "x.png", b"not an image")
    with pytest.raises(ValueError, match="product_id"):
        images._delete_command(0, 1)
    with pytest.raises(TypeError, match="product_id"):
        images._list_command(True)
    assert images._delete_command(3, 4) == (DELETE, "productId=3&id=4")
    assert images._list_command(3, select=["name"], start=50) == (
        LIST,
        "productId=3&select%5B0%5D=id&select%5B1%5D=name&start=50",
    )


def _answer(results: dict[str, object]) -> dict[str, object]:
    return {
        "result": {
            "result": results,
            "result_error": [],
            "result_total": [],
            "result_next": [],
            "result_time": [],
        }
    }


async def test_a_write_the_answer_left_out_is_unknown_and_not_resent() -> None:
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        portal.inject("error", method="batch", status=200, body=_answer({"a": {"image": 1}}))
        async with webhook_client(portal) as client:
            images = client.images
            commands = {
                "a": images._add_command(1, "a.png", PNG),
                "b": images._add_command(2, "b.png", PNG),
            }
            outcomes = await images._run(commands)
        assert outcomes["a"].ok
        assert outcomes["b"].unknown
        assert isinstance(outcomes["b"].error, bx.OutcomeUnknown)
        assert portal.counters.by_method["batch"] == 1


async def test_a_job_refuses_images_the_portal_sent_for_another_product() -> None:
    async with FakePortal(products=2, images_per_product=1, rate=None) as portal:
        stray = {"id": 9, "name": "x.png", "productId": 2}
        portal.inject(
            "error",
            method="batch",
            status=200,
            body=_answer({"p0": {"productImages": [stray]}, "p1": {"productImages": []}}),
        )
        async with webhook_client(portal) as client:
            with pytest.raises(bx.MalformedResponse, match="product 2, not asked for"):
                _ = [entry async for entry in products(client, [1, 2])]


# --- run_batch: the shape of the requests ---------------------------------------------------


async def test_a_request_too_large_is_cut_smaller_and_no_attempt_is_counted() -> None:
    one_try = bx.RetryPolicy(max_attempts=1)
    big = PNG + bytes(3000)  # about 4 kB a command once encoded
    async with FakePortal(
        products=8, images_per_product=0, rate=None, max_request_body=10_000
    ) as portal:
        async with webhook_client(portal, retry=one_try) as client:
            images = client.images
            commands = {f"c{p}": images._add_command(p, f"{p}.png", big) for p in range(1, 9)}
            packing = Packing()
            outcomes = await images._run(commands, packing=packing)
        assert all(outcome.ok for outcome in outcomes.values())
        assert all(len(portal.catalog.images(pid)) == 1 for pid in range(1, 9))
        # Refused whole (nothing ran), then cut: each add ran once, none counted a retry.
        assert portal.counters.by_status[413] >= 1
        assert portal.counters.commands["catalog.productimage.add"] == 8
        assert packing.size is not None
        assert packing.size < 10_000


async def test_commands_that_cannot_go_in_a_batch_request_are_told_so() -> None:
    async with FakePortal(
        products=2, images_per_product=0, rate=None, max_request_body=10_000
    ) as portal:
        async with webhook_client(portal) as client:
            images = client.images
            huge = {"h": images._add_command(1, "h.png", PNG + bytes(20_000))}
            too_large = (await images._run(huge))["h"]
            portal.inject("command_error", method=ADD, body=NOT_IN_BATCH)
            refused = await images._run({"a": images._add_command(1, "a.png", PNG)})
            portal.inject("error", method="batch", status=400, body=NOT_IN_BATCH)
            pair = {f"c{p}": images._add_command(p, f"{p}.png", PNG) for p in (1, 2)}
            whole = await images._run(pair)
        assert too_large.alone
        assert too_large.error is not None
        assert too_large.error.status == 413
        assert not too_large.unknown
        assert refused["a"].alone
        assert all(outcome.alone and not outcome.unknown for outcome in whole.values())
        # None of them ran: the caller may send each in a request of its own.
        assert portal.catalog.image_count() == 0
