"""The ``bitrix-images`` argument parser: its commands, their options and their checks."""

from __future__ import annotations

import argparse
import difflib
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

from ..models import ImageType
from ..sync.terminal import PROG
from ..sync.upload.run import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_SETTLE_AFTER
from ..sync.upload.scan import DETAIL_PREFIX, MAX_FILE_BYTES, PREVIEW_PREFIX
from .arguments import (
    DESTRUCTIVE,
    FORMATTER,
    add_portal_options,
    command,
    output_option,
    positive_float,
    positive_int,
    product_and_image,
    product_id,
    shard,
)
from .portal import OAUTH_ENV, OAUTH_URL_ENV, REDIS_ENV, WEBHOOK_ENV

if TYPE_CHECKING:
    from .arguments import Commands

__all__ = ["EXIT_STATUSES", "SHELLS", "build_parser", "parse"]

# The one table of exit statuses: the top-level --help and the README print it.
EXIT_STATUSES: Final = (
    ("0", "done: everything asked for happened"),
    ("1", "some items failed (each named in a warning), or the run stopped on an error"),
    ("2", "usage: a bad option or argument, no portal, an unusable --redis; nothing was sent"),
    ("130", "interrupted by Ctrl-C (SIGINT); what was done is summed up"),
    ("143", "stopped by SIGTERM (timeout, systemd, docker); what was done is summed up"),
)
SHELLS: Final = ("bash", "zsh", "fish")


def _exit_table() -> str:
    return "exit status:\n" + "\n".join(f"  {code:<5}{meaning}" for code, meaning in EXIT_STATUSES)


def build_parser() -> argparse.ArgumentParser:
    """The ``bitrix-images`` argument parser."""
    portal = textwrap.fill(
        f"The portal: --webhook URL or {WEBHOOK_ENV}; or an OAuth application from "
        f"{', '.join(OAUTH_ENV)} and optionally {OAUTH_URL_ENV}. "
        f"--redis URL or {REDIS_ENV} shares the limits and tokens with other processes. "
        f"'{PROG} COMMAND --help' describes each command, with examples.",
        width=78,
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=FORMATTER,
        description="Bitrix24 product images (catalog.productImage.*) from the shell.",
        epilog=f"{portal}\n\n{_exit_table()}",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_portal_options(parser, nested=False)
    commands = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        help=f"what to do; '{PROG} COMMAND --help' describes it, with examples",
    )
    _add_image_commands(commands)
    _add_mirror(commands)
    _add_upload(commands)
    _add_catalogs(commands)
    _add_doctor(commands)
    _add_completion(commands)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """
    Parse *argv*; an unknown option is reported by the command it was given to, with its
    usage and the nearest option it has ("did you mean --prune?").
    """
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands = next(
            action.choices
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
        )
        _unrecognized(commands.get(args.command, parser), unknown)
    return args


def _unrecognized(parser: argparse.ArgumentParser, unknown: list[str]) -> NoReturn:
    message = f"unrecognized arguments: {' '.join(unknown)}"
    flags = [flag for action in parser._actions for flag in action.option_strings]
    for word in unknown:
        close = difflib.get_close_matches(word.partition("=")[0], flags, n=1)
        if word.startswith("-") and close:
            message += f" (did you mean {close[0]}?)"
            break
    parser.error(message)


def _version() -> str:
    from .. import __version__  # noqa: PLC0415 -- read from the metadata only when asked

    return __version__


def _add_image_commands(commands: Commands) -> None:
    """``list``, ``get``, ``add``, ``delete`` and ``fields``: one call each."""
    sub = command(
        commands,
        "list",
        "print the images of products, one JSON object per line",
        f"{PROG} list 1",
        f"{PROG} list 1 2 3 --select name,type        # several products: batched",
        f"{PROG} list 1 --select id,create_time --with-download-url",
    )
    sub.add_argument(
        "product_ids",
        metavar="PRODUCT_ID",
        type=positive_int,
        nargs="+",
        help="the products whose images to print (one or more ids)",
    )
    sub.add_argument(
        "--select",
        metavar="FIELDS",
        # One value per flag, so that the product ids after it stay ids.
        action="append",
        help="fields to fetch, comma-separated, as printed (create_time) or as on the wire "
        "(createTime); id always, product_id too for several products",
    )
    output_option(sub)

    sub = command(
        commands,
        "get",
        "print one image as a JSON object",
        f"{PROG} get 1 31",
        f"{PROG} get 1 31 --with-download-url | jq -r .download_url",
    )
    product_and_image(sub)
    output_option(sub)

    sub = command(
        commands,
        "add",
        "attach an image file to a product; print the new image",
        f"{PROG} add 1 photo.png                       # one more MORE_PHOTO",
        f"{PROG} add 1 cover.png --type DETAIL_PICTURE # replaces the detail picture",
        f"{PROG} add 1 /tmp/x1.jpg --name front.jpg",
    )
    product_id(sub, "the id of the product to attach the image to")
    sub.add_argument("file", metavar="FILE", type=Path, help="the image file to send")
    sub.add_argument("--name", help="the file name on the portal (default: FILE's name)")
    sub.add_argument(
        "--type",
        choices=[kind.value for kind in ImageType],
        default=ImageType.MORE_PHOTO.value,
        help="where the image goes on the card (default MORE_PHOTO, added to the gallery); "
        f"{DESTRUCTIVE}DETAIL_PICTURE and PREVIEW_PICTURE replace the product's previous one",
    )
    output_option(sub)

    sub = command(
        commands,
        "delete",
        f"{DESTRUCTIVE}remove an image from a product on the portal",
        f"{PROG} delete 1 31",
        f"{PROG} get 1 31 && {PROG} delete 1 31      # look before you delete",
    )
    product_and_image(sub)
    command(
        commands,
        "fields",
        "print the image fields as a JSON object keyed by wire name (createTime)",
        f"{PROG} fields",
        f"{PROG} fields | jq 'keys'",
    )


def _add_mirror(commands: Commands) -> None:
    sub = command(
        commands,
        "mirror",
        "download every image of many products into DEST/<product_id>/",
        f"{PROG} mirror --demo ./demo-images            # an embedded portal: no account needed",
        f"{PROG} mirror ./images --iblock 14 --prune     # catalog 14; drop files of gone images",
        f"{PROG} mirror ./images --products-file ids.txt --concurrency 8",
    )
    sub.add_argument(
        "dest",
        metavar="DEST",
        type=Path,
        help="the folder to mirror into: DEST/<product_id>/<file name>, with the manifest "
        "DEST/.bitrix-images.sqlite (created if missing)",
    )
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--product",
        metavar="ID",
        dest="products",
        type=positive_int,
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
        "--iblock", metavar="ID", type=positive_int, help="every product of this catalog"
    )
    source.add_argument(
        "--demo",
        action="store_true",
        help="mirror a sample catalog from an embedded portal on loopback (no portal needed)",
    )
    sub.add_argument(
        "--concurrency",
        metavar="N",
        type=positive_int,
        default=4,
        help="downloads at once (default 4); the rate limit still applies",
    )
    sub.add_argument(
        "--via",
        choices=("auto", "public", "rest"),
        default="auto",
        help="how files are fetched: 'public' through their public links (detailUrl, a static "
        "file outside the REST rate limit, no credentials sent), 'rest' through the signed "
        "REST links (downloadUrl, one rate-limited request each), 'auto' (default) public "
        "first, REST for an image whose public link does not give it",
    )
    sub.add_argument(
        "--prune",
        action="store_true",
        help=f"{DESTRUCTIVE}remove the files in DEST of images gone from the portal (only "
        "files this tool wrote, as listed in DEST/.bitrix-images.sqlite)",
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
        "--max-delete",
        metavar="N",
        type=positive_int,
        default=100,
        help="with --prune: remove nothing when a run would remove more than N files (default 100)",
    )
    sub.add_argument(
        "--rebind",
        action="store_true",
        help="mirror this portal into a DEST written for another one: fetch every file "
        "again, keep those with the same bytes, replace the others",
    )
    sub.add_argument(
        "--shard",
        metavar="K/N",
        type=shard,
        help="only the products whose id %% N == K, so that N hosts split one catalog",
    )
    _add_job_output(sub)


def _add_upload(commands: Commands) -> None:
    sub = command(
        commands,
        "upload",
        "add SRC/<product_id>/<file> images the products do not have yet",
        f"{PROG} upload ./photos --dry-run                # the plan; nothing sent",
        f"{PROG} upload ./photos",
        f"{PROG} upload ./photos --prune                  # and delete images with no file",
    )
    sub.add_argument(
        "src",
        metavar="SRC",
        type=Path,
        help="a folder of one folder per product, named by its id: SRC/<product_id>/<file>",
    )
    sub.add_argument(
        "--prune",
        action="store_true",
        help=f"{DESTRUCTIVE}delete on the portal each product's images whose names no file "
        "in its folder has",
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="list the products and print the plan; send nothing"
    )
    sub.add_argument(
        "--max-delete",
        metavar="N",
        type=positive_int,
        default=100,
        help="with --prune: delete nothing when a run would delete more than N (default 100)",
    )
    sub.add_argument(
        "--max-file-size",
        metavar="BYTES",
        type=positive_int,
        default=MAX_FILE_BYTES,
        help=f"skip files larger than BYTES (default {MAX_FILE_BYTES})",
    )
    sub.add_argument(
        "--settle-after",
        metavar="SECONDS",
        type=positive_float,
        default=DEFAULT_SETTLE_AFTER,
        help="after a run that was stopped while adds were in flight: list their products "
        "this long after each was sent, to learn whether it was made, before adding anything "
        f"(default {DEFAULT_SETTLE_AFTER:g}, the portal's limit window)",
    )
    sub.add_argument(
        "--max-request-bytes",
        metavar="BYTES",
        type=positive_int,
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
        type=positive_int,
        default=2,
        help="requests at once (default 2)",
    )
    files = textwrap.fill(
        f"files: a file named {DETAIL_PREFIX}NAME becomes the product's DETAIL_PICTURE named "
        f"NAME, {PREVIEW_PREFIX}NAME its PREVIEW_PICTURE (each replaces the previous one); "
        "every other image file is added as a MORE_PHOTO. Images are JPEG, PNG, GIF, WebP or "
        "BMP, told by their content; other files are skipped. A file whose name the product "
        "already has is left alone.",
        width=78,
    )
    sub.epilog = f"{files}\n\n{sub.epilog}"
    _add_job_output(sub)


def _add_job_output(sub: argparse.ArgumentParser) -> None:
    """``mirror`` and ``upload``: output for scripts (--json), per file (-v), none (-q), a log."""
    output = sub.add_argument_group("output")
    output.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object at the end (every count, bytes, seconds, the time held "
        "by the limits, the failures), also when the run stops; standard output holds only "
        "it, and the bar, warnings and -v lines go to standard error",
    )
    talk = output.add_mutually_exclusive_group()
    talk.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="one line per file, as --dry-run prints them: '+ 3/a.png' added or downloaded, "
        "'~' replaced or fetched again, '- 3/b.png (id 40)' removed, '=' already there, "
        "'!' failed",
    )
    talk.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="errors only: no bar, no summary, no warnings; each failure is still printed "
        "('!' lines on standard error) and the exit status is the same",
    )
    output.add_argument(
        "--log-file",
        metavar="FILE",
        type=Path,
        help="append every file event and warning to FILE, one JSON object a line, with the "
        "time; the run's summary object last",
    )


def _add_catalogs(commands: Commands) -> None:
    sub = command(
        commands,
        "catalogs",
        "list the portal's product catalogs: the ids --iblock takes, products in each",
        f"{PROG} catalogs",
        f"{PROG} catalogs --json | jq '.catalogs[].iblock_id'",
    )
    sub.add_argument(
        "--json", action="store_true", help="print one JSON object instead of one line each"
    )


def _add_doctor(commands: Commands) -> None:
    sub = command(
        commands,
        "doctor",
        "check the portal before a long job: connection, webhook, scope, limits",
        f"{PROG} doctor",
        f"{PROG} doctor --json | jq '.checks[] | select(.status != \"ok\")'",
        f"{PROG} doctor --write-check 1                  # also add and delete a test image",
    )
    sub.add_argument(
        "--json",
        action="store_true",
        help='print the report as one JSON object: {"ok": ..., "checks": [...]}',
    )
    sub.add_argument(
        "--write-check",
        metavar="PRODUCT_ID",
        type=positive_int,
        help="also add a 1x1 image to this product inside a batch, then delete it "
        "(nothing is written without this option)",
    )
    sub.epilog = (
        "exit status: 0 when the portal is ready for list, mirror and upload, 1 when not.\n\n"
        f"{sub.epilog}"
    )


def _add_completion(commands: Commands) -> None:
    sub = command(
        commands,
        "completion",
        "print the shell completion script (no portal needed)",
        f'eval "$({PROG} completion bash)"                   # in ~/.bashrc',
        f'eval "$({PROG} completion zsh)"                    # in ~/.zshrc',
        f"{PROG} completion fish > ~/.config/fish/completions/{PROG}.fish",
        portal=False,
    )
    sub.add_argument(
        "shell", metavar="SHELL", choices=SHELLS, help=f"{', '.join(SHELLS[:-1])} or {SHELLS[-1]}"
    )
