"""
The ``bitrix-images`` command line (also ``python -m bitrix_images``).

``list``, ``get``, ``add``, ``delete`` and ``fields`` map one to one onto ``client.images``
and print JSON (``list``: one object per line); ``mirror`` downloads every image of many
products into local folders (``bitrix_images.mirror``) and ``upload`` adds a folder of
photos to the products (``bitrix_images.upload``): the command line is a thin layer over
both. The portal comes from ``--webhook`` /
``BITRIX_WEBHOOK_URL`` or the ``BITRIX_*`` OAuth variables; ``--redis`` /
``BITRIX_REDIS_URL`` shares its limits and tokens with other processes.

Expected failures (the portal's errors, bad arguments, files) end in one line on standard
error and exit status 1; usage errors exit 2. No line printed ever holds the webhook code,
a token or a signed download URL: messages are scrubbed of them, and URLs are cut to
their origin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Final

import attrs
from yarl import URL

from . import _tokenfile
from ._coordinator import RedisCoordinator
from ._coordinator import _cli as coordinated
from ._interrupt import Interrupted, run_interruptible
from ._listing import products
from ._mirror import MirrorResult, catalog_ids, file_ids, mirror
from ._progress import count_ids
from ._terminal import printable
from ._throttle import RateLimit
from ._upload import (
    DEFAULT_MAX_REQUEST_BYTES,
    DETAIL_PREFIX,
    PREVIEW_PREFIX,
    UploadResult,
    upload,
)
from .client import DEFAULT_OAUTH_URL, BitrixClient
from .exceptions import BitrixError
from .images import check_select
from .models import ImageType, OAuthTokens, ProductImage

__all__ = ["main"]

PROG: Final = "bitrix-images"
WEBHOOK_ENV: Final = "BITRIX_WEBHOOK_URL"
# The variables of an OAuth application (settings/oauth/index.md), in the order asked for.
OAUTH_ENV: Final = (
    "BITRIX_CLIENT_ENDPOINT",
    "BITRIX_ACCESS_TOKEN",
    "BITRIX_REFRESH_TOKEN",
    "BITRIX_CLIENT_ID",
    "BITRIX_CLIENT_SECRET",
)
OAUTH_URL_ENV: Final = "BITRIX_OAUTH_URL"
REDIS_ENV: Final = "BITRIX_REDIS_URL"
# ProductImage's fields in output order; download_url only on request (a signed credential).
_OUTPUT: Final = ("id", "name", "product_id", "type", "create_time", "detail_url", "download_url")
_URL_IN_TEXT: Final = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


# --- argument parsing ------------------------------------------------------------------------


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

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _add_portal_options(sub, nested=True)
        return sub

    def output_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--with-download-url",
            action="store_true",
            help="also print downloadUrl (a signed link that grants access: keep it secret)",
        )

    sub = command("list", "print the images of products, one JSON object per line")
    sub.add_argument("product_ids", metavar="PRODUCT_ID", type=_positive_int, nargs="+")
    sub.add_argument(
        "--select",
        metavar="FIELDS",
        # One value per flag, so that the product ids after it stay ids.
        action="append",
        help="fields to fetch, comma-separated (id always; product_id too for several products)",
    )
    output_options(sub)

    sub = command("get", "print one image as a JSON object")
    sub.add_argument("product_id", metavar="PRODUCT_ID", type=_positive_int)
    sub.add_argument("image_id", metavar="IMAGE_ID", type=_positive_int)
    output_options(sub)

    sub = command("add", "attach an image file to a product; print the new image")
    sub.add_argument("product_id", metavar="PRODUCT_ID", type=_positive_int)
    sub.add_argument("file", metavar="FILE", type=Path)
    sub.add_argument("--name", help="the file name on the portal (default: FILE's name)")
    sub.add_argument(
        "--type",
        choices=[kind.value for kind in ImageType],
        default=ImageType.MORE_PHOTO.value,
        help="where the image goes on the card (default MORE_PHOTO)",
    )
    output_options(sub)

    sub = command("delete", "remove an image from a product")
    sub.add_argument("product_id", metavar="PRODUCT_ID", type=_positive_int)
    sub.add_argument("image_id", metavar="IMAGE_ID", type=_positive_int)

    command("fields", "print the image fields as a JSON object keyed by wire name")

    sub = command("mirror", "download every image of many products into DEST/<product_id>/")
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

    sub = command("upload", "add SRC/<product_id>/<file> images the products do not have yet")
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
    return parser


# --- the portal ------------------------------------------------------------------------------


@attrs.frozen
class _Portal:
    """Where to connect, and the secrets that must never be printed."""

    webhook: str | None = attrs.field(default=None, repr=False)
    oauth: Mapping[str, str] | None = attrs.field(default=None, repr=False)
    token_file: Path | None = None
    allow_insecure: bool = False
    redis: str | None = attrs.field(default=None, repr=False)

    def secrets(self) -> list[str]:
        found: list[str] = []
        if self.redis is not None:
            found += [self.redis, URL(self.redis).password or ""]
        if self.webhook is not None:
            segments = [part for part in self.webhook.split("/") if part]
            # https://<portal>/rest/<user>/<code>/: the code is the secret part.
            found += [self.webhook, *segments[4:]]
        if self.oauth is not None:
            found += [
                self.oauth[name]
                for name in ("BITRIX_ACCESS_TOKEN", "BITRIX_REFRESH_TOKEN", "BITRIX_CLIENT_SECRET")
            ]
        return [secret for secret in found if len(secret) >= 4]

    def client(
        self, rate_limit: RateLimit, coordinator: RedisCoordinator | None = None
    ) -> BitrixClient:
        try:
            return self._client(rate_limit, coordinator)
        except ValueError as error:
            # The library's advice, in the command line's words.
            text = str(error).replace("allow_insecure=True", "--allow-insecure")
            raise ValueError(text) from None

    def _client(self, rate_limit: RateLimit, coordinator: RedisCoordinator | None) -> BitrixClient:
        if self.webhook is not None:
            return BitrixClient.from_webhook(
                self.webhook,
                rate_limit=rate_limit,
                allow_insecure=self.allow_insecure,
                coordinator=coordinator,
            )
        assert self.oauth is not None  # noqa: S101 -- _portal() sets one of the two
        oauth = self.oauth
        expires = oauth.get("expires_at")
        return BitrixClient.from_oauth(
            oauth["BITRIX_CLIENT_ENDPOINT"],
            access_token=oauth["BITRIX_ACCESS_TOKEN"],
            refresh_token=oauth["BITRIX_REFRESH_TOKEN"],
            client_id=oauth["BITRIX_CLIENT_ID"],
            client_secret=oauth["BITRIX_CLIENT_SECRET"],
            oauth_url=oauth.get(OAUTH_URL_ENV) or DEFAULT_OAUTH_URL,
            expires_at=datetime.fromisoformat(expires) if expires else None,
            on_token_refresh=self._save_tokens,
            rate_limit=rate_limit,
            allow_insecure=self.allow_insecure,
            coordinator=coordinator,
        )

    async def _save_tokens(self, tokens: OAuthTokens) -> None:
        # With --redis the pair lives in Redis; the token file, if any, is only a copy.
        if self.token_file is None and self.redis is None:
            print(
                f"{PROG}: warning: the OAuth tokens were refreshed and the old refresh token "
                "no longer works; pass --token-file FILE to keep the new ones",
                file=sys.stderr,
            )
            return
        if self.token_file is None:
            return
        written, error = await asyncio.to_thread(_tokenfile.save_tokens, self.token_file, tokens)
        if error is not None:
            # Never dropped: the old refresh token no longer works (settings/oauth/index.md).
            reason = printable(error.strerror or str(error))
            print(
                f"{PROG}: warning: could not save the refreshed OAuth tokens to "
                f"{printable(str(self.token_file))} ({reason}); they were saved to "
                f"{printable(str(written))} instead: move that file there, or pass it as "
                "--token-file, before the next run",
                file=sys.stderr,
            )


def _portal(
    args: argparse.Namespace, env: Mapping[str, str], parser: argparse.ArgumentParser
) -> _Portal:
    """The portal from the options and the environment; a usage error when there is none."""
    webhook = args.webhook or env.get(WEBHOOK_ENV)
    insecure = bool(getattr(args, "allow_insecure", False))
    if webhook:
        return _Portal(webhook=webhook, allow_insecure=insecure)
    oauth = {name: env[name] for name in (*OAUTH_ENV, OAUTH_URL_ENV) if env.get(name)}
    token_file: Path | None = args.token_file
    if token_file is not None and token_file.exists():
        oauth.update(_tokenfile.read_tokens(token_file, writer=PROG))
    if not oauth:
        parser.error(
            f"no portal: pass --webhook URL, or set {WEBHOOK_ENV}, "
            f"or the OAuth variables {', '.join(OAUTH_ENV)}"
        )
    missing = [name for name in OAUTH_ENV if name not in oauth]
    if missing:
        parser.error(f"OAuth needs {', '.join(missing)} as well")
    if token_file is not None:
        # Before any request: a refresh rotates the pair, which must then be saved.
        _tokenfile.check_writable(token_file)
    return _Portal(oauth=oauth, token_file=token_file, allow_insecure=insecure)


def _version() -> str:
    from . import __version__  # noqa: PLC0415 -- read from the metadata only when asked

    return __version__


# --- output ------------------------------------------------------------------------------


def _snake(wire: str) -> str:
    return re.sub(r"[A-Z]", lambda match: "_" + match.group().lower(), wire)


def _output_fields(
    select: Sequence[str] | None,
    with_download_url: bool,
    parser: argparse.ArgumentParser,
    *,
    several: bool = False,
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The ``select`` to send and the fields to print (*several*: products listed at once)."""
    if select is not None:
        select = [part.strip() for text in select for part in text.split(",") if part.strip()]
    try:
        wire = check_select(select)
    except ValueError as error:
        parser.error(str(error))
    if wire is None:
        shown = _OUTPUT if with_download_url else _OUTPUT[:-1]
        return None, shown
    if "downloadUrl" in wire and not with_download_url:
        parser.error("downloadUrl is a signed link that grants access; add --with-download-url")
    if with_download_url and "downloadUrl" not in wire:
        wire = (*wire, "downloadUrl")
    if several and "productId" not in wire:
        # Lines of several products would not say whose image each one is.
        wire = (*wire, "productId")
    snake = {_snake(name) for name in wire}
    return wire, tuple(name for name in _OUTPUT if name in snake)


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ImageType):
        return value.value
    if isinstance(value, URL):
        return str(value)
    return value


def image_json(image: ProductImage, fields: Iterable[str]) -> dict[str, object]:
    """An image as a JSON-ready dict of *fields* (ISO 8601 times, enum values, URL strings)."""
    return {name: _jsonable(getattr(image, name)) for name in fields}


def _emit(data: object, out: IO[str]) -> None:
    out.write(json.dumps(data, ensure_ascii=False) + "\n")


# --- commands ----------------------------------------------------------------------------


async def _list(client: BitrixClient, args: argparse.Namespace, out: IO[str]) -> int:
    select, fields = args.output
    ids: list[int] = args.product_ids
    if len(ids) == 1:
        async for image in client.images.list(ids[0], select=select):
            _emit(image_json(image, fields), out)
        return 0
    missing = 0
    async for listed in products(client, ids, select=select):
        if listed.error is not None:
            # As mirror does: a product that is gone or closed to us is named, the rest listed.
            missing += 1
            _warn(f"product {listed.product_id} skipped: {listed.error.description}")
            continue
        for image in listed.images:
            _emit(image_json(image, fields), out)
    if missing:
        raise _Failed(f"{missing} products could not be listed (see the warnings)")
    return 0


async def _get(client: BitrixClient, args: argparse.Namespace, out: IO[str]) -> int:
    image = await client.images.get(args.product_id, args.image_id)
    _emit(image_json(image, args.output[1]), out)
    return 0


async def _add(client: BitrixClient, args: argparse.Namespace, out: IO[str]) -> int:
    if args.file.is_dir():
        raise ValueError(f"{args.file} is a directory, not an image file")
    image = await client.images.add(
        args.product_id, args.file, name=args.name, type=ImageType(args.type)
    )
    _emit(image_json(image, args.output[1]), out)
    return 0


async def _delete(client: BitrixClient, args: argparse.Namespace, out: IO[str]) -> int:
    await client.images.delete(args.product_id, args.image_id)
    _emit({"id": args.image_id, "product_id": args.product_id, "deleted": True}, out)
    return 0


async def _fields(client: BitrixClient, args: argparse.Namespace, out: IO[str]) -> int:
    fields = await client.images.fields()
    _emit({name: attrs.asdict(info) for name, info in fields.items()}, out)
    return 0


async def _mirror(client: BitrixClient, args: argparse.Namespace, out: IO[str]) -> int:
    ids: Iterable[int] | AsyncIterator[int]
    if args.products_file is not None:
        # Opened by main() and closed there: read one line at a time.
        ids = file_ids(args.ids_stream, str(args.products_file))
    elif args.iblock is not None:
        ids = catalog_ids(client, args.iblock)
    else:
        ids = args.products
    if args.shard is not None:
        ids = _sharded(ids, *args.shard)
    finished: list[MirrorResult] = []
    try:
        result = await mirror(
            client,
            ids,
            args.dest,
            prune=args.prune,
            concurrency=args.concurrency,
            verify=args.verify,
            dry_run=args.dry_run,
            progress=sys.stderr if sys.stderr.isatty() and not args.dry_run else None,
            warnings=sys.stderr,
            total=_total(args),
            on_finish=finished.append,
        )
    except BaseException:
        # Stopped by an error, RateLimited or a signal: what was done is still summed up.
        for partial in finished:
            print(partial.summary(), file=out)
        raise
    return _report(result, out, "images failed to download; run again to retry them")


def _total(args: argparse.Namespace) -> int | None:
    """The number of products to mirror, when it is known before the run (the bar's total)."""
    if args.shard is not None:
        return None
    if args.products is not None:
        return len(set(args.products))
    if args.products_file is not None and str(args.products_file) != "-":
        return count_ids(args.products_file)
    return None


async def _sharded(
    ids: Iterable[int] | AsyncIterator[int], index: int, count: int
) -> AsyncIterator[int]:
    """The ids with ``id % count == index``, read lazily."""
    if isinstance(ids, AsyncIterator):
        async for product_id in ids:
            if product_id % count == index:
                yield product_id
    else:
        for product_id in ids:
            if product_id % count == index:
                yield product_id


async def _upload(client: BitrixClient, args: argparse.Namespace, out: IO[str]) -> int:
    result = await upload(
        client,
        args.src,
        prune=args.prune,
        dry_run=args.dry_run,
        pack=not args.one_per_request,
        max_request_bytes=args.max_request_bytes,
        concurrency=args.concurrency,
        warnings=sys.stderr,
    )
    return _report(result, out, "files or images failed (see the warnings); run again")


def _report(result: MirrorResult | UploadResult, out: IO[str], failed: str) -> int:
    """Print a job's plan (a dry run) and summary; fail when something did not happen."""
    for line in result.planned:
        print(line, file=out)
    print(result.summary(), file=out)
    if result.failed:
        raise _Failed(f"{result.failed} {failed}")
    if result.unlisted:
        raise _Failed(f"{result.unlisted} products could not be listed (see the warnings)")
    return 0


_COMMANDS: Final = {
    "list": _list,
    "get": _get,
    "add": _add,
    "delete": _delete,
    "fields": _fields,
    "mirror": _mirror,
    "upload": _upload,
}


class _Failed(Exception):
    """A command that ran to its end but did not do all it was asked to."""


async def _run(portal: _Portal, args: argparse.Namespace) -> int:
    rate_limit = RateLimit(
        rate=args.rate or 2.0,
        burst=args.burst or 50,
        max_in_flight=max(8, getattr(args, "concurrency", 0)),
    )
    async with _coordinator(portal.redis) as coordinator:
        sharing = () if coordinator is None else (coordinator,)
        async with portal.client(rate_limit, *sharing) as client:
            return await _COMMANDS[args.command](client, args, sys.stdout)


@contextlib.asynccontextmanager
async def _coordinator(url: str | None) -> AsyncIterator[RedisCoordinator | None]:
    """
    A coordinator on the Redis at *url* (closed after), or ``None`` without one.

    A ``--redis`` that cannot be used stops the command before it starts, with status 2,
    as any other unusable option does: running uncoordinated would break what the caller
    asked Redis for (one bucket, one refresh) without anyone noticing.
    """
    if url is None:
        yield None
        return
    try:
        coordinator = await coordinated.connect(url)
    except coordinated.RedisUnusable as error:
        print(f"{PROG}: error: {printable(str(error))}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        with coordinated.warnings_to(_warn):
            yield coordinator
    finally:
        await coordinator.redis.aclose()


async def _run_demo(args: argparse.Namespace) -> int:
    # Only the demo needs the embedded portal (and aiohttp.web): imported here, not above.
    from .testing import DEMO_BURST, DEMO_RATE, demo_portal  # noqa: PLC0415

    async with demo_portal() as fake:
        catalog = fake.catalog
        print(
            f"demo: an embedded demo portal on loopback ({fake.origin.host}:{fake.port}) with "
            f"{len(catalog.product_ids())} products and {catalog.image_count()} images; "
            "nothing leaves this machine",
            flush=True,
        )
        args.iblock = catalog.iblock_id
        portal = _Portal(webhook=str(fake.webhook_url))
        args.rate = args.rate or DEMO_RATE
        args.burst = args.burst or DEMO_BURST
        return await _run(portal, args)


# --- errors ------------------------------------------------------------------------------


def _scrub(message: str, secrets: Iterable[str]) -> str:
    """One line with no secret in it: URLs cut to their origin, known secrets masked."""

    def origin(match: re.Match[str]) -> str:
        try:
            url = URL(match.group())
            return str(url.origin()) if url.host else "<URL>"
        except ValueError:
            return "<URL>"

    text = _URL_IN_TEXT.sub(origin, message)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return " ".join(text.split())


def _error(message: str, secrets: Iterable[str]) -> int:
    print(f"{PROG}: error: {printable(_scrub(message, secrets))}", file=sys.stderr)
    return 1


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {printable(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for usage errors, from argparse)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("list", "get", "add"):
        several = len(getattr(args, "product_ids", ())) > 1
        args.output = _output_fields(
            getattr(args, "select", None), args.with_download_url, parser, several=several
        )
    demo = args.command == "mirror" and args.demo
    if demo and args.webhook:
        parser.error("--demo runs its own portal; leave out --webhook")
    secrets: list[str] = []
    try:
        portal = None if demo else _portal(args, os.environ, parser)
        redis = getattr(args, "redis", None) or os.environ.get(REDIS_ENV) or None
        if portal is not None and redis is not None:
            portal = attrs.evolve(portal, redis=redis)
        secrets = [] if portal is None else portal.secrets()
        return _main(args, portal)
    except Interrupted as stop:
        print(f"{PROG}: interrupted ({stop})", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as other tools do.
        _silence_stdout()
        return 1
    except (BitrixError, ValueError, TypeError, OSError, _Failed) as error:
        return _error(str(error) or type(error).__name__, secrets)


def _main(args: argparse.Namespace, portal: _Portal | None) -> int:
    if args.command == "mirror" and args.products_file is not None:
        path: Path = args.products_file
        opened = (
            contextlib.nullcontext(sys.stdin) if str(path) == "-" else path.open(encoding="utf-8")
        )
        with opened as stream:
            args.ids_stream = stream
            return _start(args, portal)
    return _start(args, portal)


def _start(args: argparse.Namespace, portal: _Portal | None) -> int:
    if portal is None:
        return asyncio.run(run_interruptible(_run_demo(args)))
    return asyncio.run(run_interruptible(_run(portal, args)))


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
