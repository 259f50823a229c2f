"""
W7: ``bitrix_images.upload`` of many small images, packed adds against one add per request.

    python -m benchmarks --only W7 [--quick]      (the section "W7" of RESULTS.md)

For each mode a fresh portal process (``python -m bitrix_images.testing``, products with no
images, the portal's default leaky bucket scaled up by ``SCALE``) and a fresh client process
run one upload of the same folder; the client reports the requests it sent and the wall time
of ``upload()``. Every image is then on the portal exactly once (the second, checking run
of each mode adds nothing and sends only the listing). The default bucket (2/s, burst 50)
is scaled up so that the one-add-per-request run ends in minutes; the "at 2/s" column is
what the same requests cost at the real default: ``max(0, requests - 50) / 2`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import write_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

SCALES = {
    # images, products, bucket scale (x the default 2/s, burst 50)
    "full": {"images": 2_000, "products": 40, "scale": 20},
    "quick": {"images": 400, "products": 8, "scale": 20},
}
IMAGE_BYTES = 2_000


def _png(tag: str) -> bytes:
    body = tag.encode()
    return b"\x89PNG\r\n\x1a\n" + body + b"\0" * (IMAGE_BYTES - 8 - len(body))


def make_src(root: Path, images: int, products: int) -> None:
    per = math.ceil(images / products)
    made = 0
    for product_id in range(1, products + 1):
        folder = root / str(product_id)
        folder.mkdir(parents=True)
        for n in range(per):
            if made == images:
                return
            (folder / f"photo-{n:04d}.png").write_bytes(_png(f"{product_id}/{n}"))
            made += 1


def _portal(products: int, rate: float, burst: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "bitrix_images.testing", "--port", "0"),
            *("--products", str(products), "--images-per-product", "0"),
            *("--rate", str(rate), "--burst", str(burst)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def _client(url: str, src: Path, rate: float, burst: int, pack: bool) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            *("-m", "benchmarks._w7", "client", url, str(src)),
            *("--rate", str(rate), "--burst", str(burst)),
            *(() if pack else ("--single",)),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"W7 client failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(scale: dict[str, int], log: Callable[[str], None]) -> dict[str, Any]:
    rate, burst = 2.0 * scale["scale"], 50 * scale["scale"]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="w7-") as tmp:
        src = Path(tmp)
        make_src(src, scale["images"], scale["products"])
        for label, pack in (("packed (batch of adds)", True), ("one add per request", False)):
            log(f"W7: {label}, {scale['images']} images, bucket {rate:g}/s burst {burst}")
            portal, url = _portal(scale["products"], rate, burst)
            try:
                first = _client(url, src, rate, burst, pack)
                check = _client(url, src, rate, burst, pack)
            finally:
                portal.terminate()
                portal.wait(timeout=30)
                assert portal.stdout is not None
                portal.stdout.close()
            if first["added"] != scale["images"] or check["added"] != 0:
                raise RuntimeError(f"W7 {label}: added {first['added']}, then {check['added']}")
            first["real_rate_s"] = max(0, first["requests"] - 50) / 2.0
            first["check_requests"] = check["requests"]
            rows[label] = first
    packed, single = rows["packed (batch of adds)"], rows["one add per request"]
    return {
        "scale": scale,
        "rate": rate,
        "burst": burst,
        "rows": rows,
        "request_ratio": single["requests"] / packed["requests"],
        "wall_ratio": single["seconds"] / packed["seconds"],
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def render(report: dict[str, Any]) -> str:
    scale = report["scale"]
    lines = [
        f"### W7: upload of {scale['images']} images of {IMAGE_BYTES} bytes into "
        f"{scale['products']} products, bucket {report['rate']:g}/s burst {report['burst']} "
        f"(the default x{scale['scale']})",
        "",
        "| mode | requests | wall s | at the real 2/s, burst 50 | a second run's requests |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, row in report["rows"].items():
        lines.append(
            f"| {label} | {row['requests']} | {row['seconds']:.2f} | "
            f"{row['real_rate_s']:.0f} s | {row['check_requests']} |"
        )
    lines += [
        "",
        f"Packing sends {report['request_ratio']:.1f}x fewer requests and is "
        f"{report['wall_ratio']:.1f}x faster here ({report['generated']}).",
        "",
    ]
    return "\n".join(lines)


def write(table: str) -> None:
    write_section(RESULTS, "W7", "Upload packing (W7)", table)


def main(*, quick: bool, write_results: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Run W7, print its table, and (unless told not to) write it into RESULTS.md."""
    report = measure(SCALES["quick" if quick else "full"], log)
    table = render(report)
    print(table)
    if write_results:
        write(table)
        log(f"wrote W7 into {RESULTS}")
    return report


async def _upload(url: str, src: Path, rate: float, burst: int, pack: bool) -> dict[str, Any]:
    import bitrix_images as bx

    limits = bx.RateLimit(rate=rate, burst=burst)
    async with bx.BitrixClient.from_webhook(url, rate_limit=limits) as client:
        result = await bx.upload(client, src, pack=pack, concurrency=4)
    return {
        "requests": result.requests,
        "seconds": result.seconds,
        "added": result.added,
        "failed": result.failed,
        "packed": result.packed,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks._w7")
    parser.add_argument("mode", choices=("client",))
    parser.add_argument("url")
    parser.add_argument("src", type=Path)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--burst", type=int, required=True)
    parser.add_argument("--single", action="store_true")
    args = parser.parse_args()
    outcome = asyncio.run(_upload(args.url, args.src, args.rate, args.burst, not args.single))
    print(json.dumps(outcome))
