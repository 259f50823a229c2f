"""
The benchmarked clients, one module each, all with the same two entry points.

``prepare(job)`` does what must not be timed (imports, patches, listing the images that a
download run will fetch) and returns a state; ``run(job, state, tally)`` is the timed part.
``tally`` receives every image id the client produced, for the correctness check.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["CLIENTS", "Job", "Tally"]

#: client name -> module under ``benchmarks._clients``
CLIENTS = {
    "bitrix_images": "bitrix_images_many",
    "bitrix_images_fast": "bitrix_images_many",  # download(durable=False)
    "naive": "naive_loop",
    "fast_bitrix24": "fast_b24",
    "b24pysdk": "b24py",
    "raw_aiohttp": "raw_aiohttp",
    "raw_aiohttp_fsync": "raw_aiohttp",  # each file fsynced, in a thread
}


class Tally:
    """Count, sum and sum of squares of the ids seen: equal to the catalog's only if every
    image came exactly once (a duplicate and a missing image almost never cancel in both)."""

    __slots__ = ("count", "sum", "sumsq")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0
        self.sumsq = 0

    def add(self, image_id: int) -> None:
        self.count += 1
        self.sum += image_id
        self.sumsq += image_id * image_id

    def add_all(self, ids: list[int]) -> None:
        self.count += len(ids)
        self.sum += sum(ids)
        self.sumsq += sum(i * i for i in ids)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "sum": self.sum, "sumsq": self.sumsq}


class Job(argparse.Namespace):
    """What one client run does (the parsed command line of ``benchmarks._run``)."""

    client: str
    workload: str  # "list" (load or stream every image) or "download"
    url: str
    products: int
    rate: float | None
    burst: int
    concurrency: int
    images: int  # download: how many images
    out_dir: str | None

    def product_ids(self) -> range:
        return range(1, self.products + 1)


def image_shape(result: Any) -> list[dict[str, Any]]:
    """The image dicts of a peer's answer, whatever nesting it kept."""
    if isinstance(result, dict):
        if "productImages" in result:
            return list(result["productImages"])
        if "id" in result:
            return [result]
        out: list[dict[str, Any]] = []
        for value in result.values():
            out.extend(image_shape(value))
        return out
    if isinstance(result, (list, tuple)):
        if result and isinstance(result[0], dict) and "id" in result[0]:
            return list(result)  # already flat: fast-bitrix24 flattens batch answers
        out = []
        for value in result:
            out.extend(image_shape(value))
        return out
    return []
