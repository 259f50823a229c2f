"""``upload`` across hosts: with a coordinator, one upload per portal and product id."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis_server import RedisServer, running_redis
from support import FAST_RETRY, PNG_HEAD, UNLIMITED

import bitrix_images as bx
from bitrix_images.sync.upload.journal import LockedError
from bitrix_images.testing import FakePortal


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def coordinators(redis_server: RedisServer) -> AsyncIterator[list[bx.RedisCoordinator]]:
    """Two coordinators on two connections: two hosts, as far as Redis can tell."""
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(2)]
    yield [bx.RedisCoordinator(c, namespace="upload", lock_ttl=2.0) for c in clients]
    for client in clients:
        await client.aclose()


def client_for(portal: FakePortal, coordinator: bx.RedisCoordinator) -> bx.BitrixClient:
    return bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED, coordinator=coordinator
    )


async def test_two_hosts_uploading_copies_of_one_folder_add_each_file_once(
    tmp_path: Path, coordinators: list[bx.RedisCoordinator]
) -> None:
    one = tmp_path / "host-1"
    for pid in (1, 2):
        (one / str(pid)).mkdir(parents=True)
        for n in range(3):
            (one / str(pid) / f"p{n}.png").write_bytes(PNG_HEAD + bytes([pid, n]))
    two = tmp_path / "host-2"
    shutil.copytree(one, two)  # the same photos, synced to a second host
    async with FakePortal(products=2, images_per_product=0, rate=None) as portal:
        async with (
            client_for(portal, coordinators[0]) as a,
            client_for(portal, coordinators[1]) as b,
        ):
            first, second = await asyncio.gather(
                bx.upload(a, one, lock_wait=60), bx.upload(b, two, lock_wait=60)
            )
        assert portal.counters.commands["catalog.productimage.add"] == 6
        for pid in (1, 2):
            names = Counter(image.name for image in portal.catalog.images(pid))
            assert names == Counter(f"p{n}.png" for n in range(3))
        assert sorted([first.added, second.added]) == [0, 6]


async def test_a_product_held_on_another_host_is_named(
    tmp_path: Path, coordinators: list[bx.RedisCoordinator]
) -> None:
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "a.png").write_bytes(PNG_HEAD)
    async with FakePortal(products=4, images_per_product=0, rate=None) as portal:
        key = coordinators[1].product_lock(portal.webhook_url.origin(), "upload", 4)
        assert await coordinators[1].try_hold(key, "pid 7 on other-host, since then (x)")
        try:
            async with client_for(portal, coordinators[0]) as client:
                with pytest.raises(LockedError, match=r"product 4 .* by pid 7 on other-host"):
                    await bx.upload(client, tmp_path, lock_wait=0)
            assert portal.counters.requests == 0
        finally:
            await coordinators[1].release_hold(key, "pid 7 on other-host, since then (x)")
        assert await coordinators[1].holder(key) is None
