"""The pieces every ``bitrix-images`` command's parser is built from: option types, the
portal options, and the subcommand with its examples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .portal import REDIS_ENV, WEBHOOK_ENV

if TYPE_CHECKING:
    from typing import TypeAlias

    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "DESTRUCTIVE",
    "FORMATTER",
    "add_portal_options",
    "command",
    "output_option",
    "positive_float",
    "positive_int",
    "product_and_image",
    "product_id",
    "shard",
]

DESTRUCTIVE: Final = "DESTRUCTIVE: "


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


# Epilogs (examples, the exit table) keep their lines.
FORMATTER: Final = argparse.RawDescriptionHelpFormatter


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not int(index) < int(count):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return int(index), int(count)


def add_portal_options(parser: argparse.ArgumentParser, *, nested: bool) -> None:
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
        type=positive_float,
        default=unset,
        help="requests per second the portal drains (default 2, Enterprise 5)",
    )
    group.add_argument(
        "--burst",
        type=positive_int,
        default=unset,
        help="requests the portal lets through at once (default 50, Enterprise 250)",
    )


def command(
    commands: Commands, name: str, help: str, *examples: str, portal: bool = True
) -> argparse.ArgumentParser:
    sub = commands.add_parser(
        name,
        help=help,
        description=help,
        epilog=_examples(*examples),
        formatter_class=FORMATTER,
    )
    if portal:
        add_portal_options(sub, nested=True)
    return sub


def output_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--with-download-url",
        action="store_true",
        help="also print download_url (a signed link that grants access: keep it secret)",
    )


def product_id(sub: argparse.ArgumentParser, help: str = "the product's id") -> None:
    sub.add_argument("product_id", metavar="PRODUCT_ID", type=positive_int, help=help)


def product_and_image(sub: argparse.ArgumentParser) -> None:
    product_id(sub)
    sub.add_argument(
        "image_id",
        metavar="IMAGE_ID",
        type=positive_int,
        help="the image's id (the id list prints)",
    )
