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

from ._catalogs import PortalCatalog
from ._portal import FakePortal

__all__ = ["build_parser", "main", "parse_args", "serve"]


def _scopes(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


_EPILOG = """\
output:
  standard output: the webhook URL, one line, flushed at once
      http://127.0.0.1:PORT/rest/1/CODE/
  standard error: the OAuth application (for the BITRIX_* variables)
      client_endpoint=... oauth_url=...
      client_id=... client_secret=...
      access_token=... refresh_token=...

examples:
  python -m bitrix_images.testing --port 8080 --products 100
  python -m bitrix_images.testing --rate 0 --operating-limit 0     # no limits at all
  python -m bitrix_images.testing --variations 5 --private-files   # offers; /upload/ closed

exit status: 0 after SIGINT (Ctrl-C) or SIGTERM, 2 for a bad option."""


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m bitrix_images.testing``, each described in ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m bitrix_images.testing",
        description=(
            "Serve an embedded Bitrix24 portal (catalog.productImage.*, catalog.product.list, "
            "catalog.catalog.list, batch, scope, method.get, server.time, app.info) on "
            "loopback until SIGINT or SIGTERM, seeded with products 1..N and their PNG "
            "images, with the portal's rate and operating limits. The webhook URL is the "
            "first line of standard output; OAuth details go to standard error."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    add(
        "--port",
        type=int,
        default=0,
        help="port to bind; 0 picks a free port (default: %(default)s)",
    )
    add("--products", type=int, default=10, help="seeded products, ids 1..N (default: %(default)s)")
    add(
        "--images-per-product",
        type=int,
        default=3,
        help="seeded images of each product (default: %(default)s)",
    )
    add(
        "--variations",
        type=int,
        default=0,
        metavar="N",
        help="put the last N products in a catalog of variations (offers), iblock "
        "--iblock-id + 1, tied to the product catalog (default: %(default)s)",
    )
    add(
        "--iblock-id",
        type=int,
        default=14,
        help="iblock id of the product catalog (default: %(default)s)",
    )
    add(
        "--rate",
        type=float,
        default=2.0,
        help="leaky bucket drain, requests/s; 0 disables it (default: %(default)s)",
    )
    add("--burst", type=int, default=50, help="leaky bucket depth, requests (default: %(default)s)")
    add(
        "--page-mode",
        choices=("source", "offset"),
        default="source",
        help="catalog.productImage.list: every image in one answer (the server code) or "
        "pages of 50 with next (the docs) (default: %(default)s)",
    )
    add(
        "--image-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="pad each PNG to about BYTES; default: 1x1 PNGs of ~100 bytes",
    )
    add(
        "--operating-limit",
        type=float,
        default=480.0,
        metavar="S",
        help="operating seconds per method per window; 0 turns the limit off "
        "(default: %(default)s)",
    )
    add(
        "--operating-window",
        type=float,
        default=600.0,
        metavar="S",
        help="window, seconds (default: %(default)s)",
    )
    add(
        "--operating-cost",
        type=float,
        default=0.0,
        metavar="S",
        help="operating seconds booked per call (simulated, never slept) (default: %(default)s)",
    )
    add(
        "--operating-billing",
        choices=("inner", "batch", "both"),
        default="inner",
        help="who pays for a batch: its commands (the docs), the batch (b24jssdk #539), "
        "both (default: %(default)s)",
    )
    add(
        "--operating-report",
        choices=("full", "operating", "none"),
        default="full",
        help="what the time blocks say (a self-hosted portal may leave parts out) "
        "(default: %(default)s)",
    )
    add(
        "--operating-baskets",
        choices=("first-call", "clock"),
        default="first-call",
        help="where the ten baskets of window/10 open: at the first call after the previous "
        "basket, or aligned on the clock (default: %(default)s)",
    )
    add(
        "--operating-reset-rounding",
        choices=("floor", "ceil"),
        default="floor",
        help="how operating_reset_at rounds the second the oldest basket leaves "
        "(default: %(default)s)",
    )
    add(
        "--max-request-body",
        type=int,
        default=None,
        metavar="BYTES",
        help="answer 413 to a REST request with a longer body (as nginx does); default: no limit",
    )
    add(
        "--scopes",
        type=_scopes,
        default=("catalog",),
        metavar="LIST",
        help="comma-separated scopes of the webhook (default: catalog); without catalog "
        "every catalog.* method answers insufficient_scope",
    )
    add(
        "--no-batch-writes",
        dest="batch_writes",
        action="store_false",
        help="refuse add/delete inside batch with ERROR_BATCH_METHOD_NOT_ALLOWED",
    )
    add(
        "--private-files",
        dest="public_files",
        action="store_false",
        help="close /upload/: every detailUrl answers nginx's 403 page",
    )
    add(
        "--files-origin",
        default=None,
        metavar="HOST",
        help="serve detailUrl files from a second origin on HOST (a free port), a stand-in "
        "for cloud storage; detailUrl is then absolute",
    )
    add(
        "--clock-skew",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds the portal's clock is ahead (negative: behind) in server.time and "
        "time blocks (default: %(default)s)",
    )
    add("--seed", type=int, default=0, help="seed of the images' bytes (default: %(default)s)")
    add(
        "--webhook-code",
        default=None,
        metavar="CODE",
        help="the webhook's code, the secret part of its URL; default: random",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _catalogs(args: argparse.Namespace) -> tuple[PortalCatalog, ...]:
    if args.variations <= 0:
        return (PortalCatalog(args.iblock_id),)
    first = max(args.products - args.variations, 0) + 1
    return (
        PortalCatalog(args.iblock_id),
        PortalCatalog(
            args.iblock_id + 1,
            "Product catalog (offers)",
            products=range(first, args.products + 1),
            parent_iblock_id=args.iblock_id,
            sku_property_id=97,
        ),
    )


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
            iblock_id=args.iblock_id,
            catalogs=_catalogs(args),
            scopes=args.scopes,
            batch_writes=args.batch_writes,
            public_files=args.public_files,
            files_origin=args.files_origin,
            clock_skew=args.clock_skew,
            operating_baskets=args.operating_baskets,
            operating_reset_rounding=args.operating_reset_rounding,
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
