"""``bitrix_images`` used naively: ``client.images.list(pid)`` for each product, one request
per product, a few products at a time (``--concurrency`` workers)."""

from __future__ import annotations

import asyncio
from typing import Any

from . import Job, Tally
from .bitrix_images_many import rate_limit


def prepare(job: Job) -> Any:
    import bitrix_images  # noqa: F401  (import cost stays out of the timing)

    return None


def run(job: Job, state: Any, tally: Tally) -> dict[str, Any]:
    from bitrix_images import BitrixClient

    async def main() -> dict[str, Any]:
        limit = rate_limit(job, max_in_flight=job.concurrency)
        async with BitrixClient.from_webhook(job.url, rate_limit=limit) as client:
            todo = list(reversed(job.product_ids()))

            async def worker() -> None:
                while todo:
                    product_id = todo.pop()
                    async for image in client.images.list(product_id):
                        tally.add(image.id)

            await asyncio.gather(*(worker() for _ in range(job.concurrency)))
            return {"retries": client.stats.retries}

    return asyncio.run(main())
