"""
A ``FakePortal`` in its own process, driven by JSON lines on stdin.

    python -m benchmarks._portal_proc --products N --images-per-product K \
        [--rate R --burst B] [--image-size BYTES]

The first line on stdout is ``{"url": "<webhook url>"}``. Then each stdin line is one
command and gets one answer line:

* ``{"cmd": "reset"}``: zero the counters and empty the portal's leaky bucket, so that the
  next client starts from the state a fresh portal would have;
* ``{"cmd": "counters"}``: requests, by method, by status, 503s sent, peak in-flight, and the
  portal process's CPU seconds;
* ``{"cmd": "expected", "products": P}``: count, sum and sum of squares of the image ids of
  products 1..P, read from the portal's own catalog (the correctness reference);
* ``{"cmd": "quit"}`` or end of input: stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _expected(portal: Any, products: int) -> dict[str, int]:
    count = total = squares = 0
    records = portal.catalog.records
    for product_id in range(1, products + 1):
        for record in records(product_id):
            count += 1
            total += record.id
            squares += record.id * record.id
    return {"count": count, "sum": total, "sumsq": squares}


def _counters(portal: Any) -> dict[str, Any]:
    c = portal.counters
    return {
        "requests": c.requests,
        "by_method": dict(c.by_method),
        "by_status": {str(k): v for k, v in c.by_status.items()},
        "rate_limited": c.rate_limited,
        "max_in_flight": c.max_in_flight,
        "cpu": _cpu(),
    }


def _answer(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    from bitrix_images.testing import FakePortal

    async with FakePortal(
        products=args.products,
        images_per_product=args.images_per_product,
        page_mode="source",
        rate=args.rate,
        burst=args.burst,
        image_size=args.image_size,
        record_calls=False,
        host="127.0.0.1",
        port=0,
    ) as portal:
        _answer({"url": str(portal.webhook_url), "pid_started": time.time()})
        cache: dict[int, dict[str, int]] = {}
        # Bounded: the parent sends a handful of commands per client run; EOF ends it.
        for _ in range(100_000):
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            try:
                command = json.loads(line)
            except ValueError:
                _answer({"error": "not JSON"})
                continue
            name = command.get("cmd")
            if name == "quit":
                _answer({"ok": True})
                return
            if name == "reset":
                portal.counters.reset()
                # The portal's own reset (bucket and operating time), never its private
                # attributes: those moved once and the bucket silently stayed full between runs.
                portal.reset_limits()
                _answer({"ok": True, "cpu": _cpu()})
            elif name == "counters":
                _answer(_counters(portal))
            elif name == "expected":
                products = int(command["products"])
                if products not in cache:
                    cache[products] = _expected(portal, products)
                _answer(cache[products])
            else:
                _answer({"error": f"unknown command {name!r}"})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._portal_proc")
    parser.add_argument("--products", type=int, required=True)
    parser.add_argument("--images-per-product", type=int, required=True)
    parser.add_argument("--rate", type=float, default=None, help="requests/s; omit for none")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=None)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
