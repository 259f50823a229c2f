"""``bitrix_images``: ``client.images.list_many`` (50 products per batch) and ``download``."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from . import Job, Tally


def rate_limit(job: Job, max_in_flight: int = 8) -> Any:
    from bitrix_images import RateLimit

    if job.rate is None:
        return RateLimit(rate=math.inf, max_in_flight=max_in_flight)
    return RateLimit(rate=job.rate, burst=job.burst, max_in_flight=max_in_flight)


def prepare(job: Job) -> Any:
    from bitrix_images import BitrixClient

    if job.workload != "download":
        return None

    async def listing() -> list[Any]:
        async with BitrixClient.from_webhook(job.url, rate_limit=rate_limit(job)) as client:
            images = []
            async for image in client.images.list_many(job.product_ids()):
                images.append(image)
                if len(images) >= job.images:
                    break
            return images

    return asyncio.run(listing())


def run(job: Job, state: Any, tally: Tally) -> dict[str, Any]:
    from bitrix_images import BitrixClient

    async def listing() -> dict[str, Any]:
        async with BitrixClient.from_webhook(job.url, rate_limit=rate_limit(job)) as client:
            add = tally.add
            async for image in client.images.list_many(job.product_ids()):
                add(image.id)
            stats = client.stats
            return {"retries": stats.retries, "throttle_wait": round(stats.throttle_wait, 3)}

    # bitrix_images_fast: the same atomic download without the fsync (durable=False).
    durable = job.client != "bitrix_images_fast"

    async def download() -> dict[str, Any]:
        out = Path(job.out_dir or ".")
        limit = rate_limit(job, max_in_flight=job.concurrency)
        async with BitrixClient.from_webhook(job.url, rate_limit=limit) as client:
            queue = list(reversed(state))

            async def worker() -> None:
                while queue:
                    image = queue.pop()
                    await client.images.download(image, out / f"{image.id}.png", durable=durable)
                    tally.add(image.id)

            await asyncio.gather(*(worker() for _ in range(job.concurrency)))
            return {"retries": client.stats.retries}

    return asyncio.run(download() if job.workload == "download" else listing())
