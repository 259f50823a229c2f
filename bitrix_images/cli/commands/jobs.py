"""``mirror`` and ``upload``: a thin layer over ``bitrix_images.sync``."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import IO, TYPE_CHECKING, TypedDict, TypeVar

from ...sync.catalogs import check_catalog
from ...sync.ids import Ids, catalog_ids, count_ids, file_ids, sharded
from ...sync.mirror import MirrorResult, mirror
from ...sync.upload.run import UploadResult, upload
from ..options import MirrorOptions, UploadOptions
from ..output import plural

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["Failed", "mirror_command", "products_total", "upload_command"]

R = TypeVar("R", MirrorResult, UploadResult)


class Failed(Exception):
    """A command that ran to its end but did not do all it was asked to."""


async def mirror_command(
    client: BitrixClient, options: MirrorOptions, out: IO[str], lines: IO[str] | None
) -> int:
    ids: Ids
    if lines is not None:
        ids = file_ids(lines, str(options.products_file))
    elif options.iblock is not None:
        ids = catalog_ids(client, options.iblock)
        await check_catalog(client, ids, sys.stderr)
    else:
        ids = options.products or ()
    if options.shard is not None:
        ids = sharded(ids, *options.shard)
    summary = _Summary(out)
    job = mirror(
        client,
        ids,
        options.dest,
        prune=options.prune,
        concurrency=options.concurrency,
        via=options.via,
        verify=options.verify,
        max_delete=options.max_delete,
        rebind=options.rebind,
        total=products_total(options),
        **summary.reporting(options.dry_run),
    )
    result = await summary.run(job)
    return summary.report(
        result, ("image", "images"), "failed to download; run again to retry them"
    )


def products_total(options: MirrorOptions) -> int | None:
    """The number of products to mirror, when it is known before the run (the bar's total)."""
    if options.shard is not None:
        return None
    if options.products is not None:
        return len(set(options.products))
    if options.products_file is not None and str(options.products_file) != "-":
        return count_ids(options.products_file)
    return None


async def upload_command(client: BitrixClient, options: UploadOptions, out: IO[str]) -> int:
    summary = _Summary(out)
    job = upload(
        client,
        options.src,
        prune=options.prune,
        max_delete=options.max_delete,
        max_file_bytes=options.max_file_bytes,
        settle_after=options.settle_after,
        pack=options.pack,
        max_request_bytes=options.max_request_bytes,
        concurrency=options.concurrency,
        **summary.reporting(options.dry_run),
    )
    result = await summary.run(job)
    return summary.report(
        result, ("file or image", "files or images"), "failed (see the warnings); run again"
    )


class _Reporting(TypedDict):
    dry_run: bool
    progress: IO[str] | None
    warnings: IO[str]
    on_finish: Callable[[MirrorResult | UploadResult], object]


class _Summary:
    """A job's report on the terminal: its bar, its warnings, its plan and summary."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.finished: list[MirrorResult | UploadResult] = []

    def reporting(self, dry_run: bool) -> _Reporting:
        """The job's options: a bar on standard error when it is a terminal (not for a
        plan), the warnings there too, and its counts here however it ends."""
        return {
            "dry_run": dry_run,
            "progress": sys.stderr if sys.stderr.isatty() and not dry_run else None,
            "warnings": sys.stderr,
            "on_finish": self.finished.append,
        }

    async def run(self, job: Awaitable[R]) -> R:
        try:
            return await job
        except BaseException:
            # Stopped by an error, RateLimited or a signal: what was done is still summed up.
            for partial in self.finished:
                print(partial.summary(), file=self.out)
            raise

    def report(
        self, result: MirrorResult | UploadResult, what: tuple[str, str], failed: str
    ) -> int:
        """Print the plan (a dry run) and the summary; fail when something did not happen."""
        for line in result.planned:
            print(line, file=self.out)
        print(result.summary(), file=self.out)
        if result.failed:
            raise Failed(f"{plural(result.failed, *what)} {failed}")
        if result.held_back:
            deletes = "delete" if isinstance(result, UploadResult) else "removal"
            raise Failed(f"{plural(result.held_back, deletes)} held back (see the warnings)")
        if result.unlisted:
            unlisted = plural(result.unlisted, "product")
            raise Failed(f"{unlisted} could not be listed (see the warnings)")
        return 0
