"""``python -m bitrix_images.testing``: serve a fake portal until SIGINT/SIGTERM.

The webhook URL is the first line of standard output (flushed at once), so a parent process
can read it; OAuth details go to standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from ._portal import FakePortal

__all__ = ["main", "parse_args", "serve"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bitrix_images.testing",
        description="Serve an embedded fake Bitrix24 portal (catalog.productImage.*).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--products", type=int, default=10)
    parser.add_argument("--images-per-product", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s; 0 disables")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--page-mode", choices=("source", "offset"), default="source")
    parser.add_argument("--image-size", type=int, default=None, help="pad PNGs to ~BYTES")
    parser.add_argument(
        "--operating-limit", type=float, default=480.0, help="seconds per method per window; 0: off"
    )
    parser.add_argument("--operating-window", type=float, default=600.0, help="seconds")
    parser.add_argument("--operating-cost", type=float, default=0.0, help="seconds per call")
    parser.add_argument(
        "--operating-billing",
        choices=("inner", "batch", "both"),
        default="inner",
        help="who pays for a batch: its commands (the docs), the batch (b24jssdk #539), both",
    )
    parser.add_argument(
        "--operating-report",
        choices=("full", "operating", "none"),
        default="full",
        help="what the time blocks say (a self-hosted portal may leave parts out)",
    )
    parser.add_argument(
        "--max-request-body",
        type=int,
        default=None,
        metavar="BYTES",
        help="answer 413 to a REST request with a longer body (as nginx does); default: no limit",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--webhook-code", default=None)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    """Run the portal described by ``args`` until ``stop`` is set (or a signal arrives)."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with FakePortal(
            products=args.products,
            images_per_product=args.images_per_product,
            page_mode=args.page_mode,
            rate=args.rate if args.rate > 0 else None,
            burst=args.burst,
            operating_limit=args.operating_limit if args.operating_limit > 0 else None,
            operating_window=args.operating_window,
            operating_cost=args.operating_cost,
            operating_billing=args.operating_billing,
            operating_report=args.operating_report,
            max_request_body=args.max_request_body,
            image_size=args.image_size,
            seed=args.seed,
            host=args.host,
            port=args.port,
            webhook_code=args.webhook_code,
        ) as portal:
            print(portal.webhook_url, flush=True)
            print(
                f"client_endpoint={portal.client_endpoint} oauth_url={portal.oauth_url}\n"
                f"client_id={portal.client_id} client_secret={portal.client_secret}\n"
                f"access_token={portal.access_token} refresh_token={portal.refresh_token}",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    sys.exit(main())
