"""fast-bitrix24: ``BitrixAsync.call(method, [params, ...])`` packs 50 commands per batch and
keeps up to 50 batches in flight; everything is loaded into one list."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from . import Job, Tally, image_shape

# With no portal limit its leaky bucket is opened up (a pool and a rate it never reaches);
# under W2 it gets the portal's own numbers.
UNLIMITED_RPS = 1e9


def prepare(job: Job) -> Any:
    import fast_bitrix24  # noqa: F401

    return None


def run(job: Job, state: Any, tally: Tally) -> dict[str, Any]:
    from fast_bitrix24 import BitrixAsync

    # call() warns that get_all() suits *.list methods; get_all() pages one product only.
    warnings.filterwarnings("ignore", message="It's better to use get_all", category=UserWarning)

    async def main() -> dict[str, Any]:
        if job.rate is None:
            bx = BitrixAsync(job.url, verbose=False, requests_per_second=UNLIMITED_RPS)
        else:
            bx = BitrixAsync(
                job.url,
                verbose=False,
                request_pool_size=job.burst,
                requests_per_second=job.rate,
            )
        result = await bx.call(
            "catalog.productImage.list", [{"productId": p} for p in job.product_ids()]
        )
        images = image_shape(result)
        tally.add_all([image["id"] for image in images])
        return {"held": len(images)}

    return asyncio.run(main())
