"""
Each command's options as a typed value, built once from argparse's ``Namespace``.

The commands read these and nothing else: no command looks into the ``Namespace`` or
changes it. Checks that argparse cannot make (``--select`` against the known fields,
``--demo`` without ``--webhook``) are made here and raise ``UsageError``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TypeAlias

import attrs

from ..images import check_select
from ..models import ImageType
from .output import snake_name
from .portal import PortalOptions, UsageError

__all__ = [
    "AddOptions",
    "CatalogsOptions",
    "CommandOptions",
    "CompletionOptions",
    "DoctorOptions",
    "FieldsOptions",
    "ImageOptions",
    "ListOptions",
    "MirrorOptions",
    "OutputOptions",
    "UploadOptions",
    "from_namespace",
]

# ProductImage's fields in output order; download_url only on request (a signed credential).
OUTPUT: Final = ("id", "name", "product_id", "type", "create_time", "detail_url", "download_url")


@attrs.frozen
class ListOptions:
    product_ids: tuple[int, ...]
    select: tuple[str, ...] | None  # the select to send (None: every field)
    fields: tuple[str, ...]  # the fields to print


@attrs.frozen
class ImageOptions:
    """``get`` and ``delete``: one image of one product."""

    product_id: int
    image_id: int
    fields: tuple[str, ...] = ()


@attrs.frozen
class AddOptions:
    product_id: int
    file: Path
    name: str | None
    type: ImageType
    fields: tuple[str, ...]


@attrs.frozen
class FieldsOptions:
    pass


@attrs.frozen
class OutputOptions:
    """How ``mirror`` and ``upload`` report: ``--json``, ``-v``, ``-q``, ``--log-file``."""

    json: bool = False
    verbose: bool = False
    quiet: bool = False
    log_file: Path | None = None


@attrs.frozen
class MirrorOptions:
    dest: Path
    products: tuple[int, ...] | None
    products_file: Path | None
    iblock: int | None
    demo: bool
    concurrency: int
    prune: bool
    dry_run: bool
    verify: bool
    shard: tuple[int, int] | None
    via: str = "auto"
    output: OutputOptions = OutputOptions()
    max_delete: int = 100
    rebind: bool = False


@attrs.frozen
class CatalogsOptions:
    json: bool


@attrs.frozen
class CompletionOptions:
    shell: str


@attrs.frozen
class UploadOptions:
    src: Path
    prune: bool
    dry_run: bool
    max_request_bytes: int
    pack: bool
    concurrency: int
    max_delete: int = 100
    max_file_bytes: int = 100 * 2**20
    settle_after: float = 60.0
    output: OutputOptions = OutputOptions()


@attrs.frozen
class DoctorOptions:
    json: bool
    write_check: int | None  # the product the write check adds to and deletes from


CommandOptions: TypeAlias = (
    ListOptions
    | ImageOptions
    | AddOptions
    | FieldsOptions
    | MirrorOptions
    | UploadOptions
    | CatalogsOptions
    | CompletionOptions
    | DoctorOptions
)


def from_namespace(args: argparse.Namespace) -> tuple[str, CommandOptions, PortalOptions]:
    """The command's name, its options and the portal options of a parsed command line."""
    portal = PortalOptions(
        webhook=getattr(args, "webhook", None),
        token_file=getattr(args, "token_file", None),
        allow_insecure=bool(getattr(args, "allow_insecure", False)),
        redis=getattr(args, "redis", None),
        rate=getattr(args, "rate", None),
        burst=getattr(args, "burst", None),
    )
    command: str = args.command
    options: CommandOptions
    if command in ("list", "get", "add"):
        ids: list[int] = args.product_ids if command == "list" else [args.product_id]
        select, fields = _output_fields(
            getattr(args, "select", None), args.with_download_url, several=len(ids) > 1
        )
        if command == "list":
            options = ListOptions(tuple(ids), select, fields)
        elif command == "get":
            options = ImageOptions(args.product_id, args.image_id, fields)
        else:
            options = AddOptions(
                args.product_id, args.file, args.name, ImageType(args.type), fields
            )
    elif command == "delete":
        options = ImageOptions(args.product_id, args.image_id)
    elif command == "fields":
        options = FieldsOptions()
    elif command == "completion":
        options = CompletionOptions(args.shell)
    elif command == "catalogs":
        options = CatalogsOptions(json=args.json)
    elif command == "doctor":
        options = DoctorOptions(json=args.json, write_check=args.write_check)
    elif command == "mirror":
        options = _mirror(args)
        if options.demo and portal.webhook:
            raise UsageError("--demo runs its own portal; leave out --webhook")
    else:
        options = UploadOptions(
            args.src,
            prune=args.prune,
            dry_run=args.dry_run,
            max_request_bytes=args.max_request_bytes,
            pack=not args.one_per_request,
            concurrency=args.concurrency,
            max_delete=args.max_delete,
            max_file_bytes=args.max_file_size,
            settle_after=args.settle_after,
            output=_job_output(args),
        )
    return command, options, portal


def _mirror(args: argparse.Namespace) -> MirrorOptions:
    return MirrorOptions(
        args.dest,
        products=None if args.products is None else tuple(args.products),
        products_file=args.products_file,
        iblock=args.iblock,
        demo=args.demo,
        concurrency=args.concurrency,
        prune=args.prune,
        dry_run=args.dry_run,
        verify=args.verify,
        shard=args.shard,
        via=args.via,
        output=_job_output(args),
        max_delete=args.max_delete,
        rebind=args.rebind,
    )


def _job_output(args: argparse.Namespace) -> OutputOptions:
    return OutputOptions(
        json=args.json, verbose=args.verbose, quiet=args.quiet, log_file=args.log_file
    )


def _output_fields(
    select: Sequence[str] | None, with_download_url: bool, *, several: bool = False
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The ``select`` to send and the fields to print (*several*: products listed at once)."""
    if select is not None:
        select = [part.strip() for text in select for part in text.split(",") if part.strip()]
    try:
        wire = check_select(select)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if wire is None:
        shown = OUTPUT if with_download_url else OUTPUT[:-1]
        return None, shown
    if "downloadUrl" in wire and not with_download_url:
        raise UsageError("downloadUrl is a signed link that grants access; add --with-download-url")
    if with_download_url and "downloadUrl" not in wire:
        wire = (*wire, "downloadUrl")
    if several and "productId" not in wire:
        # Lines of several products would not say whose image each one is.
        wire = (*wire, "productId")
    snake = {snake_name(name) for name in wire}
    return wire, tuple(name for name in OUTPUT if name in snake)
