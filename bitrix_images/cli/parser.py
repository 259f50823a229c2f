"""The ``bitrix-images`` argument parser: its commands, their options and their checks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..models import ImageType
from ..sync.terminal import PROG
from ..sync.upload.run import DEFAULT_MAX_REQUEST_BYTES
from ..sync.upload.scan import DETAIL_PREFIX, MAX_FILE_BYTES, PREVIEW_PREFIX
from .portal import OAUTH_ENV, OAUTH_URL_ENV, REDIS_ENV, WEBHOOK_ENV

if TYPE_CHECKING:
    from typing import TypeAlias

    _Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``bitrix-images`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Bitrix24 product images (catalog.productImage.*) from the shell.",
        epilog=(
            f"The portal: --webhook URL or {WEBHOOK_ENV}; or an OAuth application from "
            f"{', '.join(OAUTH_ENV)} and optionally {OAUTH_URL_ENV}. "
            f"--redis URL or {REDIS_ENV} shares the limits and tokens with other processes."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_portal_options(parser, nested=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_image_commands(commands)
    _add_mirror(commands)
    _add_upload(commands)
    _add_catalogs(commands)
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not int(index) < int(count):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return int(index), int(count)


def _version() -> str:
    from .. import __version__  # noqa: PLC0415 -- read from the metadata only when asked

    return __version__


def _add_portal_options(parser: argparse.ArgumentParser, *, nested: bool) -> None:
    """The portal options, accepted before and after the subcommand."""
    # In a subcommand they default to "not given", so as not to undo a value given before it.
    unset = argparse.SUPPRESS if nested else None
    group = parser.add_argument_group("portal")
    group.add_argument(
        "--webhook",
        metavar="URL",
        default=unset,
        help=f"the incoming webhook, https://<portal>/rest/<user>/<code>/ (env {WEBHOOK_ENV})",
    )
    group.add_argument(
        "--token-file",
        metavar="FILE",
        type=Path,
        default=unset,
        help="OAuth: read the tokens from FILE if it exists, and save refreshed ones to it",
    )
    group.add_argument(
        "--allow-insecure",
        action="store_true",
        default=unset if nested else False,
        help="permit plain http to a portal that is not on loopback (the webhook code and "
        "tokens then cross the network readable)",
    )
    group.add_argument(
        "--redis",
        metavar="URL",
        default=unset,
        help="share the limits (and OAuth tokens) with other processes through this Redis, "
        f"redis://host:6379/0 (env {REDIS_ENV}; needs bitrix_images[redis])",
    )
    group.add_argument(
        "--rate",
        type=_positive_float,
        default=unset,
        help="requests per second the portal drains (default 2, Enterprise 5)",
    )
    group.add_argument(
        "--burst",
        type=_positive_int,
        default=unset,
        help="requests the portal lets through at once (default 50, Enterprise 250)",
    )


def _command(commands: _Commands, name: str, help: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help, description=help)
    _add_portal_options(sub, nested=True)
    return sub


def _output_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--with-download-url",
        action="store_true",
        help="also print downloadUrl (a signed link that grants access: keep it secret)",
    )


def _product_and_image(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("product_id", metavar="PRODUCT_ID", type=_positive_int)
    sub.add_argument("image_id", metavar="IMAGE_ID", type=_positive_int)


def _add_image_commands(commands: _Commands) -> None:
    """``list``, ``get``, ``add``, ``delete`` and ``fields``: one call each."""
    sub = _command(commands, "list", "print the images of products, one JSON object per line")
    sub.add_argument("product_ids", metavar="PRODUCT_ID", type=_positive_int, nargs="+")
    sub.add_argument(
        "--select",
        metavar="FIELDS",
        # One value per flag, so that the product ids after it stay ids.
        action="append",
        help="fields to fetch, comma-separated (id always; product_id too for several products)",
    )
    _output_option(sub)

    sub = _command(commands, "get", "print one image as a JSON object")
    _product_and_image(sub)
    _output_option(sub)

    sub = _command(commands, "add", "attach an image file to a product; print the new image")
    sub.add_argument("product_id", metavar="PRODUCT_ID", type=_positive_int)
    sub.add_argument("file", metavar="FILE", type=Path)
    sub.add_argument("--name", help="the file name on the portal (default: FILE's name)")
    sub.add_argument(
        "--type",
        choices=[kind.value for kind in ImageType],
        default=ImageType.MORE_PHOTO.value,
        help="where the image goes on the card (default MORE_PHOTO)",
    )
    _output_option(sub)

    _product_and_image(_command(commands, "delete", "remove an image from a product"))
    _command(commands, "fields", "print the image fields as a JSON object keyed by wire name")


def _add_mirror(commands: _Commands) -> None:
    help = "download every image of many products into DEST/<product_id>/"
    sub = _command(commands, "mirror", help)
    sub.add_argument("dest", metavar="DEST", type=Path)
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--product",
        metavar="ID",
        dest="products",
        type=_positive_int,
        action="append",
        help="a product to mirror (repeatable)",
    )
    source.add_argument(
        "--products-file",
        metavar="FILE",
        type=Path,
        help="product ids, one per line (blank lines and # comments skipped; - for stdin)",
    )
    source.add_argument(
        "--iblock", metavar="ID", type=_positive_int, help="every product of this catalog"
    )
    source.add_argument(
        "--demo",
        action="store_true",
        help="mirror a sample catalog from an embedded portal on loopback (no portal needed)",
    )
    sub.add_argument(
        "--concurrency",
        metavar="N",
        type=_positive_int,
        default=4,
        help="downloads at once (default 4); the rate limit still applies",
    )
    sub.add_argument(
        "--prune",
        action="store_true",
        help="remove the files of images gone from the portal (only files this tool wrote, "
        "as listed in DEST/.bitrix-images.sqlite)",
    )
    sub.add_argument(
        "--dry-run",
        action="store_true",
        help="list the products and print what would be downloaded and removed; change nothing",
    )
    sub.add_argument(
        "--verify",
        action="store_true",
        help="re-hash the files the manifest lists and fetch again any that changed",
    )
    sub.add_argument(
        "--shard",
        metavar="K/N",
        type=_shard,
        help="only the products whose id %% N == K, so that N hosts split one catalog",
    )


def _add_upload(commands: _Commands) -> None:
    help = "add SRC/<product_id>/<file> images the products do not have yet"
    sub = _command(commands, "upload", help)
    sub.add_argument("src", metavar="SRC", type=Path)
    sub.add_argument(
        "--prune",
        action="store_true",
        help="delete each product's images whose names no file in its folder has",
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="list the products and print the plan; send nothing"
    )
    sub.add_argument(
        "--max-delete",
        metavar="N",
        type=_positive_int,
        default=100,
        help="with --prune: delete nothing when a run would delete more than N (default 100)",
    )
    sub.add_argument(
        "--max-file-size",
        metavar="BYTES",
        type=_positive_int,
        default=MAX_FILE_BYTES,
        help=f"skip files larger than BYTES (default {MAX_FILE_BYTES})",
    )
    sub.add_argument(
        "--max-request-bytes",
        metavar="BYTES",
        type=_positive_int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"largest batch request body (default {DEFAULT_MAX_REQUEST_BYTES})",
    )
    sub.add_argument(
        "--one-per-request",
        action="store_true",
        help="send each add alone instead of up to 50 in a batch request",
    )
    sub.add_argument(
        "--concurrency",
        metavar="N",
        type=_positive_int,
        default=2,
        help="requests at once (default 2)",
    )
    sub.epilog = (
        f"A file named {DETAIL_PREFIX}NAME becomes the product's DETAIL_PICTURE named NAME, "
        f"{PREVIEW_PREFIX}NAME its PREVIEW_PICTURE (each replaces the previous one); every "
        "other image file is added as a MORE_PHOTO. Files that are not images are skipped."
    )


def _add_catalogs(commands: _Commands) -> None:
    help = "list the portal's product catalogs: the ids --iblock takes, products in each"
    sub = _command(commands, "catalogs", help)
    sub.add_argument(
        "--json", action="store_true", help="print one JSON object instead of one line each"
    )
