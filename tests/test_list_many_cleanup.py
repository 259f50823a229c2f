"""``Images.list_many`` cleans up when its consumer stops early.

A consumer that is cancelled, or that breaks out of the loop and closes the generator, must
leave no batch request of it running (``client.stats.in_flight``, the client's requests on
the wire, back to zero) and must close its source of product ids at once, not whenever the
garbage collector gets to an abandoned generator. The batches are made very late (a minute),
so anything ``list_many`` left running is still running when the test looks; the checks are
made right after the consumer stopped, without waiting. Without the ``finally:`` of
``list_many`` both checks fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from support import webhook_client

from bitrix_images.testing import FakePortal

PRODUCTS = 400
BATCHES_IN_FLIGHT = 4  # the client's default window of batch requests
# Far longer than any test: a batch left running is still waiting on its answer.
LATE = 60.0
# A generous limit for the readiness wait; a slow machine is not a bug.
READY = 30.0


class Source:
    """Product ids from a generator that records whether it was closed.

    The test keeps no reference to the generator itself: ``list_many`` holds the only one,
    so the generator is closed as soon as ``list_many`` lets go of it.
    """

    def __init__(self) -> None:
        self.closed = False

    def ids(self) -> Iterator[int]:
        try:
            yield from range(1, PRODUCTS + 1)
        finally:
            self.closed = True


async def _until_late(portal: FakePortal, count: int) -> None:
    """Wait until the portal holds *count* (late) batch requests."""

    async def poll() -> None:
        while portal.counters.in_flight < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout=READY)


async def test_a_cancelled_consumer_leaves_no_batch_running() -> None:
    async with FakePortal(products=PRODUCTS, images_per_product=1, rate=None) as portal:
        async with webhook_client(portal) as client:
            # The client sends a method's first request alone, to learn its operating time
            # from the answer: let that happen before every batch is made late.
            assert [image.id async for image in client.images.list_many([1])] == [1]
            portal.inject("delay", times=1000, delay=LATE, method="batch")
            source = Source()
            images = []

            async def consume() -> None:
                async for image in client.images.list_many(source.ids()):
                    images.append(image)

            task = asyncio.ensure_future(consume())
            await _until_late(portal, BATCHES_IN_FLIGHT)
            assert client.stats.in_flight == BATCHES_IN_FLIGHT
            task.cancel()
            await asyncio.wait([task])
            assert task.cancelled()
            # The task's CancelledError holds list_many's frame, and so the ids: let it go.
            del task
            # At once: no batch request of the client is left on the wire, the ids are closed.
            assert client.stats.in_flight == 0
            assert source.closed
            assert images == []
            sent = portal.counters.by_method["batch"]
            portal.clear_faults()
            # The client still works, and the cancelled batches were not sent again.
            assert (await client.images.get(1, 1)).id == 1
            assert portal.counters.by_method["batch"] == sent


async def test_breaking_out_of_list_many_leaves_no_batch_running() -> None:
    async with FakePortal(products=PRODUCTS, images_per_product=1, rate=None) as portal:
        async with webhook_client(portal) as client:
            # A method's first request goes alone (it teaches the operating time): done here.
            assert [image.id async for image in client.images.list_many([1])] == [1]
            source = Source()
            first: list[int] = []
            # The first window of batches answers at once; every later batch is late: one
            # goes out as the consumer reaches each of the first window's batches.
            portal.inject("delay", times=BATCHES_IN_FLIGHT, delay=0.0, method="batch")
            portal.inject("delay", times=1000, delay=LATE, method="batch")
            async with contextlib.aclosing(client.images.list_many(source.ids())) as images:
                async for image in images:
                    first.append(image.product_id)
                    if len(first) == 1:
                        await _until_late(portal, 1)
                    if len(first) == 75:  # in the second batch: the sixth is out too
                        await _until_late(portal, 2)
                        assert client.stats.in_flight == 2
                        break
            # At once: the late batches were cancelled, the ids are closed.
            assert client.stats.in_flight == 0
            assert source.closed
            assert first == list(range(1, 76))
            portal.clear_faults()
