"""
``mirror`` and ``upload``: a thin layer over ``bitrix_images.sync``, and how they report.

By default: a bar on standard error when it is a terminal, the warnings there too, and the
summary line on standard output (a dry run's plan before it). ``-v`` adds one line per file
(the plan's format, ``sync.events``); ``-q`` leaves only the failures and the errors, on
standard error; ``--json`` prints one JSON object instead of the summary, also when the run
stops, and moves every other line to standard error; ``--log-file`` appends each file
event and warning as a JSON line. None of these carries a ``download_url`` (events have
none) or a URL's credentials (reasons are scrubbed).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING, TypedDict, TypeVar

import attrs

from ...sync.catalogs import check_catalog
from ...sync.events import ADD, FAIL, REPLACE, UNLISTED, FileEvent
from ...sync.ids import Ids, catalog_ids, count_ids, file_ids, sharded
from ...sync.mirror import MirrorResult, mirror
from ...sync.progress import write_line
from ...sync.upload.run import UploadResult, upload
from ..options import MirrorOptions, OutputOptions, UploadOptions
from ..output import JobLog, WarningLines, failure_json, job_json, plural, scrub

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["Failed", "mirror_command", "products_total", "upload_command"]

R = TypeVar("R", MirrorResult, UploadResult)


class Failed(Exception):
    """A command that ran to its end but did not do all it was asked to."""


async def mirror_command(
    client: BitrixClient, options: MirrorOptions, out: IO[str], lines: IO[str] | None
) -> int:
    with _Report("mirror", options.output, out, dry_run=options.dry_run) as report:
        ids: Ids
        if lines is not None:
            ids = file_ids(lines, str(options.products_file))
        elif options.iblock is not None:
            ids = catalog_ids(client, options.iblock)
            await check_catalog(client, ids, report.warnings)
        else:
            ids = options.products or ()
        if options.shard is not None:
            ids = sharded(ids, *options.shard)
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
            **report.reporting(),
        )
        result = await report.run(job)
        return report.finish(
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
    with _Report("upload", options.output, out, dry_run=options.dry_run) as report:
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
            **report.reporting(),
        )
        result = await report.run(job)
        return report.finish(
            result, ("file or image", "files or images"), "failed (see the warnings); run again"
        )


class _Reporting(TypedDict):
    dry_run: bool
    progress: IO[str] | None
    warnings: IO[str]
    on_finish: Callable[[MirrorResult | UploadResult], object]
    on_event: Callable[[FileEvent], object] | None


class _Report:
    """
    A job's report: its bar, warnings, file lines, log, and summary (a line, or the JSON
    object), printed once however the run ends. A context manager: the log is closed, and
    with ``--json`` a run stopped before it started still prints its object.
    """

    def __init__(self, command: str, output: OutputOptions, out: IO[str], *, dry_run: bool) -> None:
        self.command = command
        self.output = output
        self.out = out
        self.dry_run = dry_run
        self.finished: list[MirrorResult | UploadResult] = []
        self.failures: list[dict[str, object]] = []
        self.moved = 0  # bytes added or downloaded (upload's result does not count them)
        self.printed = False
        # Opened first: a log that cannot be written stops the run before any request.
        self.log = None if output.log_file is None else JobLog(output.log_file, dry_run=dry_run)
        stderr = None if output.quiet else sys.stderr
        self.warnings: IO[str] = (
            sys.stderr
            if self.log is None and stderr is not None
            else WarningLines(stderr, self.log)
        )
        # Where the file lines go: -v, and a dry run's plan (its output, unless -q).
        self.lines: IO[str] | None = None
        if (output.verbose or dry_run) and not output.quiet:
            self.lines = sys.stderr if output.json else out

    def __enter__(self) -> _Report:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None and not self.printed:
                # Stopped before the job began (a folder that is not one, the catalog
                # check): no counts, but a script reading the JSON still gets its object.
                self.close(None, _ended(exc), _message(exc))
        finally:
            if self.log is not None:
                self.log.close()

    def reporting(self) -> _Reporting:
        """The job's options: where its bar and warnings go, and who hears its end and its
        files (nobody when no flag asks: a plain run makes no event)."""
        output = self.output
        listening = (
            output.json or output.verbose or output.quiet or self.dry_run or self.log is not None
        )
        bar = sys.stderr.isatty() and not self.dry_run and not output.quiet
        return {
            "dry_run": self.dry_run,
            "progress": sys.stderr if bar else None,
            "warnings": self.warnings,
            "on_finish": self.finished.append,
            "on_event": self.on_event if listening else None,
        }

    def on_event(self, event: FileEvent) -> None:
        if event.reason is not None:
            # A reason quotes an error: no URL in it beyond its origin.
            event = attrs.evolve(event, reason=scrub(event.reason, ()))
        if event.kind in (FAIL, UNLISTED):
            self.failures.append(failure_json(event))
            if self.output.quiet:
                write_line(event.line, sys.stderr)
        elif event.kind in (ADD, REPLACE):
            self.moved += event.size
        if self.lines is not None:
            write_line(event.line, self.lines)
        if self.log is not None:
            self.log.event(event)

    async def run(self, job: Awaitable[R]) -> R:
        try:
            return await job
        except BaseException as stop:
            # Stopped by an error, RateLimited or a signal: what was done is still summed up.
            for partial in self.finished:
                self.close(partial, _ended(stop), _message(stop))
            raise

    def finish(
        self, result: MirrorResult | UploadResult, what: tuple[str, str], failed: str
    ) -> int:
        """Print the summary; fail when something did not happen."""
        message = None
        if result.failed:
            message = f"{plural(result.failed, *what)} {failed}"
        elif result.held_back:
            deletes = "delete" if isinstance(result, UploadResult) else "removal"
            message = f"{plural(result.held_back, deletes)} held back (see the warnings)"
        elif result.unlisted:
            message = f"{plural(result.unlisted, 'product')} could not be listed (see the warnings)"
        self.close(result, "failed" if message else "done", message)
        if message is not None:
            raise Failed(message)
        return 0

    def close(
        self, result: MirrorResult | UploadResult | None, ended: str, error: str | None
    ) -> None:
        """The run's summary: the JSON object or the line, and the log's last record."""
        self.printed = True
        extra = {"bytes": self.moved, "failures": self.failures}
        summary = job_json(self.command, result, ended=ended, error=error, extra=extra)
        if self.log is not None:
            self.log.end(summary)
        if self.output.json:
            print(json.dumps(summary, ensure_ascii=False), file=self.out, flush=True)
        elif result is not None and not self.output.quiet:
            print(result.summary(), file=self.out)


def _ended(stop: BaseException) -> str:
    """How a run that raised *stop* ended: ``interrupted`` by a signal, or an ``error``."""
    return (
        "interrupted" if isinstance(stop, (asyncio.CancelledError, KeyboardInterrupt)) else "error"
    )


def _message(stop: BaseException) -> str | None:
    if isinstance(stop, (asyncio.CancelledError, KeyboardInterrupt)):
        return None
    return scrub(str(stop) or type(stop).__name__, ())
