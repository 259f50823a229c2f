"""
W5: operating time under every basket model and billing a portal may use (issues 11, 24).

    python -m benchmarks --only W5 [--quick]      (the section "W5" of RESULTS.md)

A portal with a compressed operating window (limits.md: 480 s per method per 600 s on the
cloud; here ``limit`` s per ``window`` s, the issue's 1.5 s per 6 s) where every
``catalog.productImage.list`` command costs 3 ms, and a client told the window, with its
request bucket wide open, listing ``products`` products with ``list_many``. One run per
portal model and billing: where the ten baskets open ("first-call": at the first call after
the previous basket; "clock": aligned on the clock), how ``operating_reset_at`` is rounded
("floor", "ceil"), and who pays for a batch ("inner": each command under its method, the
docs; "batch": the batch as a whole, b24jssdk PR #539; "both"). The docs settle none of the
three, so the client must keep to the limit under all twelve.

Reported: the portal's refusals (429s and refused commands), the requests, and the wall time
over the bound ``(windows needed - 1) x window``: no client can finish sooner, since the last
window's work can only start once the ones before it have left.

The portal runs in this process (its counters are read directly); the client in a fresh
process: ``python -m benchmarks._w5 URL --products N --limit S --window S``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"

PER_PRODUCT = 2
HEADROOM = 0.9
COST = 0.003  # seconds per list command
# Full: the window and limit, three windows of work (bound 12 s; the 2,500
# products, six windows, would take 6 minutes for the twelve runs). Quick: half of each.
SCALES = {
    "full": {"products": 1_250, "window": 6.0, "limit": 1.5},
    "quick": {"products": 400, "window": 3.0, "limit": 0.75},
}
MODELS = tuple(itertools.product(("first-call", "clock"), ("floor", "ceil")))
BILLINGS = ("inner", "batch", "both")
TARGET = 1.25

Log = Callable[[str], None]


def bound(products: int, limit: float, window: float) -> tuple[int, float]:
    """Windows needed (at the client's headroom) and the least wall time they allow."""
    total = math.ceil(products / 50) * 50 * COST
    needed = math.ceil(total / (limit * HEADROOM) - 1e-9)
    return needed, (needed - 1) * window


async def _one(
    scale: dict[str, Any], model: tuple[str, str], billing: str, timeout: float
) -> dict[str, Any]:
    from bitrix_images.testing import FakePortal

    products, window, limit = int(scale["products"]), scale["window"], scale["limit"]
    async with FakePortal(
        products=products,
        images_per_product=PER_PRODUCT,
        rate=None,
        operating_limit=limit,
        operating_window=window,
        operating_cost={"catalog.productImage.list": COST},
        operating_billing=billing,  # type: ignore[arg-type]  # one of BILLINGS
        operating_baskets=model[0],  # type: ignore[arg-type]  # one of MODELS
        operating_reset_rounding=model[1],  # type: ignore[arg-type]
        record_calls=False,
    ) as portal:
        ids = [r.id for p in range(1, products + 1) for r in portal.catalog.records(p)]
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
            str(products),
            "--limit",
            str(limit),
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


def measure(quick: bool, log: Log, timeout: float = 120.0) -> dict[str, Any]:
    """One run per model and billing; the rows of the table and the verdicts."""
    scale = SCALES["quick" if quick else "full"]
    needed, least = bound(int(scale["products"]), scale["limit"], scale["window"])
    log(
        f"W5: {scale['products']} products, list commands of {COST * 1000:g} ms, operating "
        f"limit {scale['limit']:g} s per {scale['window']:g} s window: {needed} windows, "
        f"bound {least:.1f} s; 4 portal models x 3 billings"
    )
    rows: dict[str, dict[str, Any]] = {}
    for model in MODELS:
        for billing in BILLINGS:
            result = asyncio.run(_one(scale, model, billing, timeout))
            wall = result.get("wall")
            ratio = wall / least if isinstance(wall, float) and least else None
            label = f"{model[0]}, {model[1]}, {billing}"
            rows[label] = {**result, "wall_vs_bound": ratio}
            log(
                f"  W5 {label:<24} wall {wall} s ({ratio or 0:.3f}x bound)  "
                f"req {result.get('requests')}  refusals {result.get('refusals')}  "
                f"{'ok' if result['correct'] else 'WRONG ' + str(result.get('error', ''))}"
            )
    ratios = [r["wall_vs_bound"] for r in rows.values()]
    worst = None if None in ratios else max(ratios)
    return {
        **scale,
        "mode": "quick" if quick else "full",
        "needed": needed,
        "bound": least,
        "rows": rows,
        "worst": worst,
        "refusals_met": all(r.get("refusals") == 0 for r in rows.values()),
        "ratio_met": worst is not None and worst <= TARGET,
        "correct": all(r["correct"] for r in rows.values()),
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"### W5 ({report['mode']}): {report['products']} products, {COST * 1000:g} ms per list "
        f"command, limit {report['limit']:g} s per {report['window']:g} s window, client told "
        f"the window ({report['needed']} windows, bound {report['bound']:.1f} s)",
        "",
        "| baskets, reset rounding, billing | requests | refusals | wall s | wall / bound "
        "| throttle wait s | correct |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, row in report["rows"].items():
        ratio = row.get("wall_vs_bound")
        lines.append(
            f"| {label} | {row.get('requests')} | {row.get('refusals')} "
            f"| {row.get('wall', '-')} | {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {row.get('throttle_wait', '-')} | {'yes' if row['correct'] else 'NO'} |"
        )
    worst = report["worst"]
    lines += [
        "",
        f"Targets: 0 refusals in every model and billing "
        f"({'met' if report['refusals_met'] else 'MISSED'}); wall <= {TARGET:g}x the bound "
        f"(worst {'-' if worst is None else f'{worst:.2f}x'}: "
        f"{'met' if report['ratio_met'] else 'MISSED'}); every image listed once "
        f"({'yes' if report['correct'] else 'NO'}). {report['generated']}.",
        "",
    ]
    return "\n".join(lines)


def write(table: str) -> None:
    write_section(RESULTS, "W5", "W5", table)


def main(*, quick: bool, write_results: bool, log: Log) -> dict[str, Any]:
    """Run W5, print its table, and (unless told not to) write it into RESULTS.md."""
    report = measure(quick, log)
    table = render(report)
    print(table)
    if write_results:
        write(table)
        log(f"wrote W5 into {RESULTS}")
    if not (report["refusals_met"] and report["ratio_met"] and report["correct"]):
        log("W5: a target was missed")
    return report


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


def client_main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._w5")
    parser.add_argument("url")
    parser.add_argument("--products", type=int, default=SCALES["full"]["products"])
    parser.add_argument("--limit", type=float, default=SCALES["full"]["limit"])
    parser.add_argument("--window", type=float, default=SCALES["full"]["window"])
    args = parser.parse_args()
    result = asyncio.run(_client(args.url, args.products, args.limit, args.window))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    client_main()
