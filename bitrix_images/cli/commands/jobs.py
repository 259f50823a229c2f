"""``mirror`` and ``upload``: a thin layer over ``bitrix_images.sync``."""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING

from ...sync.ids import Ids, catalog_ids, count_ids, file_ids, sharded
from ...sync.mirror import MirrorResult, mirror
from ...sync.upload.run import UploadResult, upload
from ..options import MirrorOptions, UploadOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any, TypeVar

    from ...client import BitrixClient

    R = TypeVar("R", MirrorResult, UploadResult)

__all__ = ["Failed", "mirror_command", "products_total", "upload_command"]


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
    else:
        ids = options.products or ()
    if options.shard is not None:
        ids = sharded(ids, *options.shard)
    result = await _summed_up(
        out,
        lambda finished: mirror(
            client,
            ids,
            options.dest,
            prune=options.prune,
            concurrency=options.concurrency,
            verify=options.verify,
            dry_run=options.dry_run,
            progress=_bar(dry_run=options.dry_run),
            warnings=sys.stderr,
            total=products_total(options),
            on_finish=finished,
        ),
    )
    return _report(result, out, "images failed to download; run again to retry them")


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
    result = await _summed_up(
        out,
        lambda finished: upload(
            client,
            options.src,
            prune=options.prune,
            dry_run=options.dry_run,
            pack=options.pack,
            max_request_bytes=options.max_request_bytes,
            concurrency=options.concurrency,
            progress=_bar(dry_run=options.dry_run),
            warnings=sys.stderr,
            on_finish=finished,
        ),
    )
    return _report(result, out, "files or images failed (see the warnings); run again")


def _bar(*, dry_run: bool) -> IO[str] | None:
    """Where a job's bar goes: standard error when it is a terminal (not for a plan)."""
    return sys.stderr if sys.stderr.isatty() and not dry_run else None


async def _summed_up(
    out: IO[str], start: Callable[[Callable[[R], object]], Coroutine[Any, Any, R]]
) -> R:
    """Run a job; when it is stopped (an error, ``RateLimited``, a signal), sum up anyway."""
    finished: list[R] = []
    try:
        return await start(finished.append)
    except BaseException:
        for partial in finished:
            print(partial.summary(), file=out)
        raise


def _report(result: MirrorResult | UploadResult, out: IO[str], failed: str) -> int:
    """Print a job's plan (a dry run) and summary; fail when something did not happen."""
    for line in result.planned:
        print(line, file=out)
    print(result.summary(), file=out)
    if result.failed:
        raise Failed(f"{result.failed} {failed}")
    if result.unlisted:
        raise Failed(f"{result.unlisted} products could not be listed (see the warnings)")
    return 0
