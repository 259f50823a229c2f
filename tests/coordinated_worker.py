"""
One client process for the coordinator's multi-process tests (and benchmark W6).

``python tests/coordinated_worker.py CONFIG`` where CONFIG is a JSON object:

* ``webhook`` (a URL) or ``oauth`` (``client_endpoint``, ``access_token``,
  ``refresh_token``, ``client_id``, ``client_secret``, ``oauth_url``);
* ``redis`` (a URL, or null for no coordinator), ``namespace``, ``lock_ttl``;
* ``products``: ``[first, last]`` (inclusive), listed with ``list_many`` (or, with
  ``each``, one ``list`` call per product, four at a time);
* ``rate``, ``burst``; ``retry``: the ``RetryPolicy`` keywords;
* ``ready``: when true, print ``ready`` and wait for a line on stdin before starting.

Prints one JSON line: ``images`` (the ids listed, in order), ``stats`` (the client's),
``error`` (``"ClassName: message"`` or null), ``wall`` and ``cpu`` (seconds of the listing
alone). SDK log records go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
import time
from typing import Any

import attrs

import bitrix_images as bx


async def work(config: dict[str, Any]) -> dict[str, Any]:
    coordinator = None
    redis_client = None
    if config.get("redis"):
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(
            config["redis"], socket_timeout=1.0, socket_connect_timeout=1.0
        )
        coordinator = bx.RedisCoordinator(
            redis_client,
            namespace=config.get("namespace", "bitrix_images"),
            lock_ttl=config.get("lock_ttl", 30.0),
        )
    options: dict[str, Any] = {
        "rate_limit": bx.RateLimit(rate=config.get("rate", 10.0), burst=config.get("burst", 20)),
        "retry": bx.RetryPolicy(**config.get("retry", {})),
        "coordinator": coordinator,
    }
    if "webhook" in config:
        client = bx.BitrixClient.from_webhook(config["webhook"], **options)
    else:
        client = bx.BitrixClient.from_oauth(**config["oauth"], **options)
    if config.get("ready"):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    first, last = config["products"]
    images: list[int] = []
    error = None
    started, cpu = time.perf_counter(), _cpu()
    async with client:
        try:
            if config.get("each"):
                await _each(client, range(first, last + 1), images)
            else:
                async for image in client.images.list_many(range(first, last + 1)):
                    images.append(image.id)
        except bx.BitrixError as exc:
            error = f"{type(exc).__name__}: {exc}"
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    if redis_client is not None:
        await redis_client.aclose()
    return {
        "images": images,
        "stats": attrs.asdict(client.stats),
        "error": error,
        "wall": wall,
        "cpu": cpu,
    }


async def _each(client: bx.BitrixClient, products: range, images: list[int]) -> None:
    """One ``list`` call per product, four at a time: many cheap requests."""
    queue = iter(products)

    async def lane() -> None:
        for product_id in queue:
            async for image in client.images.list(product_id):
                images.append(image.id)

    await asyncio.gather(*(lane() for _ in range(4)))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s %(message)s"
    )
    result = asyncio.run(work(json.loads(sys.argv[1])))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
