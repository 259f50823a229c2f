"""
The floor: aiohttp, the same 50-command batches, stdlib ``json``, dicts kept as they come.

No limiter and no backoff policy: a 503 is resent after a fixed 0.1 s (at most 200 times per
batch), so under a portal limit it shows how many refusals an unpaced client collects.
Downloads: a plain GET of each ``downloadUrl``, the body written to a file (and, as
``raw_aiohttp_fsync``, fsynced in a thread).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from . import Job, Tally

RETRY_503_AFTER = 0.1
MAX_ATTEMPTS = 200
BATCHES_IN_FLIGHT = 4  # as many as bitrix_images' list_many keeps


def _chunks(ids: range) -> list[range]:
    return [ids[i : i + 50] for i in range(0, len(ids), 50)]


async def _list(job: Job, session: Any, ids: range, keep: list[dict[str, Any]]) -> int:
    url = job.url + "batch.json"
    todo = list(reversed(_chunks(ids)))
    refused = 0

    async def worker() -> None:
        nonlocal refused
        while todo:
            chunk = todo.pop()
            body = json.dumps(
                {
                    "halt": 0,
                    "cmd": {
                        f"p{i}": f"catalog.productImage.list?productId={p}"
                        for i, p in enumerate(chunk)
                    },
                }
            )
            for _ in range(MAX_ATTEMPTS):
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    status = response.status
                    raw = await response.read()
                if status == 503:
                    refused += 1
                    await asyncio.sleep(RETRY_503_AFTER)
                    continue
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {raw[:200]!r}")
                answer = json.loads(raw)["result"]
                if answer["result_error"]:
                    raise RuntimeError(f"command errors: {answer['result_error']}")
                for value in answer["result"].values():
                    keep.extend(value["productImages"])
                break
            else:
                raise RuntimeError("gave up after repeated 503s")

    await asyncio.gather(*(worker() for _ in range(BATCHES_IN_FLIGHT)))
    return refused


def prepare(job: Job) -> Any:
    import aiohttp

    if job.workload != "download":
        return None

    async def listing() -> list[dict[str, Any]]:
        images: list[dict[str, Any]] = []
        needed = -(-job.images // 50) * 50
        async with aiohttp.ClientSession() as session:
            await _list(job, session, job.product_ids()[: max(needed, 1)], images)
        return images[: job.images]

    return asyncio.run(listing())


def run(job: Job, state: Any, tally: Tally) -> dict[str, Any]:
    import aiohttp

    async def listing() -> dict[str, Any]:
        images: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            refused = await _list(job, session, job.product_ids(), images)
        tally.add_all([image["id"] for image in images])
        return {"held": len(images), "503_seen": refused}

    # raw_aiohttp_fsync: each file written and fsynced in a thread, the floor a durable
    # download is held to.
    durable = job.client == "raw_aiohttp_fsync"

    async def download() -> dict[str, Any]:
        out = Path(job.out_dir or ".")
        queue = list(reversed(state))
        connector = aiohttp.TCPConnector(limit=job.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                while queue:
                    image = queue.pop()
                    async with session.get(image["downloadUrl"]) as response:
                        if response.status != 200:
                            raise RuntimeError(f"HTTP {response.status}")
                        body = await response.read()
                    path = out / f"{image['id']}.png"
                    if durable:
                        await asyncio.to_thread(_write_synced, path, body)
                    else:
                        path.write_bytes(body)
                    tally.add(image["id"])

            await asyncio.gather(*(worker() for _ in range(job.concurrency)))
        return {}

    return asyncio.run(download() if job.workload == "download" else listing())


def _write_synced(path: Path, body: bytes) -> None:
    with open(path, "wb") as file:
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
