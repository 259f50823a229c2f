"""
W5: operating time under each billing a portal may use (issue 11).

A portal with a compressed operating window (limits.md: 480 s per method per 600 s on the
cloud; here ``LIMIT`` s per ``window`` s) where every ``catalog.productImage.list`` command
costs 2 ms, and a client with its request bucket wide open, listing ``PRODUCTS`` products
with ``list_many``: 25 batches of 50, 2.5 s of operating time, three windows' worth. One run
per billing: "inner" (each command under its method: the docs), "batch" (the batch as a
whole: b24jssdk PR #539), "both". Reported: the portal's refusals (429s and refused
commands) and the wall time over the bound, ``(windows needed - 1) x window``: no client
can finish sooner, since the last window's work can only start once the ones before it
have left.

The portal runs in this process (its counters are read directly); the client in a fresh
process: ``python -m benchmarks._w5 URL --products N --limit S --window S``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

PRODUCTS = 1_250
PER_PRODUCT = 2
LIMIT = 1.0
HEADROOM = 0.9
COST = 0.002  # seconds per list command
WINDOWS = {"full": 5.0, "quick": 4.0}
BILLINGS = ("inner", "batch", "both")

ROOT = Path(__file__).resolve().parent.parent


def bound(window: float) -> tuple[int, float]:
    """Windows needed (at the client's headroom) and the least wall time they allow."""
    total = math.ceil(PRODUCTS / 50) * 50 * COST
    needed = math.ceil(total / (LIMIT * HEADROOM) - 1e-9)
    return needed, (needed - 1) * window


async def _one(billing: str, window: float, timeout: float) -> dict[str, Any]:
    from bitrix_images.testing import FakePortal

    async with FakePortal(
        products=PRODUCTS,
        images_per_product=PER_PRODUCT,
        rate=None,
        operating_limit=LIMIT,
        operating_window=window,
        operating_cost={"catalog.productImage.list": COST},
        operating_billing=billing,  # type: ignore[arg-type]  # one of BILLINGS
        record_calls=False,
    ) as portal:
        ids = [r.id for p in range(1, PRODUCTS + 1) for r in portal.catalog.records(p)]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks._w5",
            str(portal.webhook_url),
            "--products",
            str(PRODUCTS),
            "--limit",
            str(LIMIT),
            "--window",
            str(window),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            return {"error": f"timed out after {timeout} s", "correct": False}
        lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
        result: dict[str, Any] = (
            json.loads(lines[-1]) if lines else {"error": err.decode().strip()[-500:]}
        )
        counters = portal.counters
        result["requests"] = counters.requests
        result["refusals"] = counters.operating_refused
        result["status_429"] = counters.by_status.get(429, 0)
        result["correct"] = result.get("count") == len(ids) and result.get("sum") == sum(ids)
        return result


def execute(mode: str, log: Any, timeout: float = 120.0) -> dict[str, Any]:
    """One run per billing; ``{label: summary}`` in the shape the report expects."""
    window = WINDOWS[mode]
    needed, least = bound(window)
    log(
        f"W5: {PRODUCTS} products, list commands of {COST * 1000:g} ms, operating limit "
        f"{LIMIT:g} s per {window:g} s window: {needed} windows, bound {least:.1f} s"
    )
    out: dict[str, Any] = {}
    for billing in BILLINGS:
        result = asyncio.run(_one(billing, window, timeout))
        wall = result.get("wall")
        summary = {
            "billing": billing,
            "window": window,
            "windows_needed": needed,
            "bound": least,
            "wall": wall,
            "wall_vs_bound": wall / least if isinstance(wall, float) and least else None,
            "requests": result.get("requests"),
            "refusals": result.get("refusals"),
            "status_429": result.get("status_429"),
            "rate_limited": 0,
            "count": result.get("count"),
            "correct": bool(result.get("correct")),
            "errors": [result["error"]] if result.get("error") else [],
        }
        out[f"bitrix_images@{billing}"] = summary
        log(
            f"  W5 {billing:<6} wall {wall} s ({summary['wall_vs_bound'] or 0:.3f}x bound)  "
            f"req {summary['requests']}  refusals {summary['refusals']}  "
            f"{'ok' if summary['correct'] else 'WRONG'}"
        )
    return out


def targets(w5: dict[str, Any]) -> dict[str, Any]:
    if not w5:
        return {}
    window = next(iter(w5.values()))["window"]
    refusals = {s["billing"]: s.get("refusals") for s in w5.values()}
    ratios = [s.get("wall_vs_bound") for s in w5.values()]
    # The client waits for its own time to leave the window, not for operating_reset_at
    # plus a second, so no second per window is added to the 1.10x.
    worst = max((r for r in ratios if r is not None), default=None)
    return {
        "W5_refusals": {
            "target": "0 in every billing mode",
            "measured": ", ".join(f"{k} {v}" for k, v in refusals.items()),
            "met": all(v == 0 for v in refusals.values()),
        },
        "W5_wall_vs_bound": {
            "target": f"<= 1.10x bound in every billing mode (window {window:g} s)",
            "measured": worst,
            "met": worst is not None and None not in ratios and worst <= 1.10,
        },
    }


def render(w5: dict[str, Any] | None) -> list[str]:
    if not w5:
        return []
    first = next(iter(w5.values()))
    lines = [
        f"### W5: operating time, {PRODUCTS} products, {COST * 1000:g} ms per list command, "
        f"limit {LIMIT:g} s per {first['window']:g} s window ({first['windows_needed']} "
        f"windows, bound {first['bound']:.1f} s)",
        "",
        "| client @ billing | requests | refusals | wall s | wall / bound | correct |",
        "|---|---|---|---|---|---|",
    ]
    for label, s in w5.items():
        ratio = s.get("wall_vs_bound")
        lines.append(
            f"| {label} | {s.get('requests')} | {s.get('refusals')} "
            f"| {s.get('wall') if s.get('wall') is not None else '-'} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} | {'yes' if s['correct'] else 'NO'} |"
        )
    lines.append("")
    return lines


async def _client(url: str, products: int, limit: float, window: float) -> dict[str, Any]:
    import bitrix_images as bx

    rate_limit = bx.RateLimit(
        rate=math.inf, operating_limit=limit, operating_headroom=HEADROOM, operating_window=window
    )
    count = total = 0
    started = time.perf_counter()
    async with bx.BitrixClient.from_webhook(url, rate_limit=rate_limit) as client:
        async for image in client.images.list_many(range(1, products + 1)):
            count += 1
            total += image.id
        wall = time.perf_counter() - started
        return {
            "wall": round(wall, 3),
            "count": count,
            "sum": total,
            "throttle_wait": round(client.stats.throttle_wait, 3),
            "retries": client.stats.retries,
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._w5")
    parser.add_argument("url")
    parser.add_argument("--products", type=int, default=PRODUCTS)
    parser.add_argument("--limit", type=float, default=LIMIT)
    parser.add_argument("--window", type=float, default=WINDOWS["full"])
    args = parser.parse_args()
    result = asyncio.run(_client(args.url, args.products, args.limit, args.window))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
