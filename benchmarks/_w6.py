"""
W6: four processes sharing one portal's bucket, with and without ``RedisCoordinator``.

``python -m benchmarks._w6 [--quick]`` (also ``python -m benchmarks --only W6``).

1. **Shared bucket.** A ``FakePortal`` with a 20/s, burst-50 bucket serves four worker
   processes (``tests/coordinated_worker.py``), each listing a quarter of the catalog at the
   portal's own numbers (``RateLimit(rate=20, burst=50)``): one ``list`` call per product,
   four at a time (cheap requests: the bucket, not the portal's CPU, is the bound), then with
   ``list_many`` (50 products a request). Each with a coordinator on a real
   ``redis-server`` and without. Reported: the portal's 503s, the requests it received, and
   the wall time from the release of the workers to the last one's end against the bound
   ``(requests needed - burst) / rate``.
2. **Round-trip cost.** In one process, the client-side work of pacing one request: the
   local ``LeakyBucket`` + ``OperatingBudget`` against ``SharedLimits`` (one ``pace`` and
   one ``settle`` round trip to Redis over loopback). Reported: wall and CPU per request in
   the client, and the Redis server's CPU per request (``INFO cpu``).

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "coordinated_worker.py"
RATE, BURST = 20.0, 50
SCALES = {
    "full": {"products": 10_000, "calls": 600, "runs": 3, "round_trips": 20_000},
    "quick": {"products": 4_000, "calls": 250, "runs": 1, "round_trips": 3_000},
}


async def _workers(redis_url: str | None, products: int, *, each: bool) -> dict[str, Any]:
    from bitrix_images.testing import FakePortal

    async with FakePortal(
        products=products, images_per_product=1, rate=RATE, burst=BURST, operating_limit=None
    ) as portal:
        share = products // 4
        namespace = "w6" + uuid.uuid4().hex[:8]
        procs = []
        for k in range(4):
            config = {
                "webhook": str(portal.webhook_url),
                "redis": redis_url,
                "namespace": namespace,
                "products": [1 + k * share, products if k == 3 else (k + 1) * share],
                "rate": RATE,
                "burst": BURST,
                "retry": {"max_attempts": 100, "max_delay": 2.0, "max_wait": 600.0},
                "ready": True,
                "each": each,
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                json.dumps(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 120)).strip() == b"ready"
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        outputs = await asyncio.gather(*(p.communicate() for p in procs))
        wall = time.perf_counter() - started
        results = [json.loads(out.decode().splitlines()[-1]) for out, _ in outputs]
        images = sorted(i for r in results for i in r["images"])
        expected = sorted(r.id for p in range(1, products + 1) for r in portal.catalog.records(p))
        requests = portal.counters.requests
        needed = products if each else -(-products // 50)
        return {
            "correct": images == expected and all(r["error"] is None for r in results),
            "wall": wall,
            "bound": max(0.0, (needed - BURST) / RATE),
            "503s": portal.counters.rate_limited,
            "requests": requests,
            "client_cpu": sum(r["cpu"] for r in results),
            "fallbacks": sum(r["stats"]["coordinator_fallbacks"] for r in results),
        }


async def _round_trips(redis_url: str, n: int) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from yarl import URL

    import bitrix_images as bx
    from bitrix_images._coordinator import SharedLimits, webhook_credential
    from bitrix_images._wire.limits import LeakyBucket, OperatingBudget
    from bitrix_images._wire.protocol import TimeInfo

    unlimited = bx.RateLimit(rate=float("inf"))
    info = TimeInfo(processing=0.01, operating=1.0, operating_reset_at=time.time() + 600)
    method = "catalog.productImage.list"
    bucket = LeakyBucket(unlimited.rate, unlimited.burst)
    budget = OperatingBudget(unlimited.operating_limit, unlimited.operating_headroom)

    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        _, reservation = budget.reserve({method: 1})
        bucket.reserve()
        assert reservation is not None
        budget.settle(reservation, {method: info}, spent=True)
    local = {"wall_us": 0.0, "cpu_us": 0.0}
    local["wall_us"] = (time.perf_counter() - started) / n * 1e6
    local["cpu_us"] = (time.process_time() - cpu) / n * 1e6

    client = aioredis.Redis.from_url(redis_url)
    coordinator = bx.RedisCoordinator(client, namespace="w6" + uuid.uuid4().hex[:8])
    shared = SharedLimits(
        coordinator.link(URL("https://example.bitrix24.com"), webhook_credential("w6")),
        unlimited,
        LeakyBucket(unlimited.rate, unlimited.burst),
        hold=75.0,
    )
    for _ in range(200):  # warm up: connection, script cache
        pacing = await shared.pace([method])
        await shared.settle(pacing.ticket, {method: info})
    server_cpu = await _server_cpu(client)
    latencies = []
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        tick = time.perf_counter()
        pacing = await shared.pace([method])
        await shared.settle(pacing.ticket, {method: info})
        latencies.append(time.perf_counter() - tick)
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - cpu
    server_cpu = await _server_cpu(client) - server_cpu
    await client.aclose()
    latencies.sort()
    return {
        "local": local,
        "redis": {
            "wall_us": wall / n * 1e6,
            "p50_us": statistics.median(latencies) * 1e6,
            "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
            "client_cpu_us": client_cpu / n * 1e6,
            "server_cpu_us": server_cpu / n * 1e6,
            "fallbacks": shared.fallbacks,
        },
    }


async def _server_cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# The rows of the table: (one list call per product?, with a coordinator?).
_LABELS = {
    "list_coordinated": (True, True),
    "list_alone": (True, False),
    "list_many_coordinated": (False, True),
    "list_many_alone": (False, False),
}
_NAMES = {
    "list_coordinated": "`list` per product, with RedisCoordinator",
    "list_alone": "`list` per product, without (each alone)",
    "list_many_coordinated": "`list_many`, with RedisCoordinator",
    "list_many_alone": "`list_many`, without (each alone)",
}


def run(quick: bool) -> dict[str, Any]:
    """Run W6; return its figures (medians over the runs)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from redis_server import RedisServer

    scale = SCALES["quick" if quick else "full"]
    server = RedisServer()
    server.start()
    try:
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key in _LABELS}
        for _ in range(scale["runs"]):
            for key, (each, coordinated) in _LABELS.items():
                count = scale["calls"] if each else scale["products"]
                url = server.url if coordinated else None
                runs[key].append(asyncio.run(_workers(url, count, each=each)))
        cost = asyncio.run(_round_trips(server.url, scale["round_trips"]))
    finally:
        server.close()
    summary: dict[str, Any] = {"scale": scale, "cost": cost}
    for label, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        bound = results[0]["bound"]
        summary[label] = {
            "correct": all(r["correct"] for r in results),
            "wall": wall,
            "bound": bound,
            "wall_over_bound": wall / bound if bound else None,
            "503s": statistics.median(r["503s"] for r in results),
            "requests": statistics.median(r["requests"] for r in results),
            "client_cpu": statistics.median(r["client_cpu"] for r in results),
            "fallbacks": max(r["fallbacks"] for r in results),
            "runs": len(results),
        }
    return summary


def render(summary: dict[str, Any]) -> str:
    """The W6 tables in Markdown."""
    scale = summary["scale"]
    lines = [
        f"### W6: 4 processes, portal bucket {RATE:g}/s, burst {BURST}: "
        f"{scale['calls']} products listed one call each, then {scale['products']} with "
        "`list_many` (50 a request)",
        "",
        "| | correct | requests | bound s | wall s | wall / bound | 503s | client CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, name in _NAMES.items():
        r = summary[key]
        lines.append(
            f"| {name} | {'yes' if r['correct'] else 'NO'} | {r['requests']:g} | "
            f"{r['bound']:.2f} | {r['wall']:.2f} | {r['wall_over_bound']:.2f}x | "
            f"{r['503s']:g} | {r['client_cpu']:.2f} |"
        )
    cost = summary["cost"]
    lines += [
        "",
        f"Pacing one request, {scale['round_trips']} requests, no waits (unlimited bucket):",
        "",
        "| | wall per request | p50 | p99 | client CPU | Redis server CPU |",
        "|---|---|---|---|---|---|",
        f"| local bucket + budget | {cost['local']['wall_us']:.1f} us | | | "
        f"{cost['local']['cpu_us']:.1f} us | |",
        f"| RedisCoordinator (pace + settle) | {cost['redis']['wall_us']:.0f} us | "
        f"{cost['redis']['p50_us']:.0f} us | {cost['redis']['p99_us']:.0f} us | "
        f"{cost['redis']['client_cpu_us']:.0f} us | {cost['redis']['server_cpu_us']:.0f} us |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._w6")
    parser.add_argument("--quick", action="store_true", help="a smaller catalog, one run")
    args = parser.parse_args(argv)
    summary = run(args.quick)
    print(render(summary))
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
