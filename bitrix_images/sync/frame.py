"""
What both jobs stand on: the errors that stop a run, the run's totals, one bounded runner,
and the closing of a run (its result, handed to ``on_finish`` however the run ends).

The shape is s3transfer's: ``mirror`` and ``upload`` differ in what one task does, not in
how tasks are started, stopped, counted and reported. A job is a ``Job`` subclass that
names its counts and its result class and writes ``body()``; ``Job.run()`` measures the
client's statistics around it, builds the result from the counts (declared once, in the
counts class the result inherits) and calls ``on_finish``, also on an error or a
cancellation, so that a summary can always be printed. The job's bar and warnings are a
``Progress`` (``sync.progress``), its one reporter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import attrs

from ..exceptions import AuthError, RateLimited
from .events import FileEvent
from .progress import Progress

if TYPE_CHECKING:
    from ..client import BitrixClient

__all__ = ["FATAL", "Counts", "Job", "RunTotals", "run_bounded"]

# Errors after which every further request would fail too: a job stops at once.
FATAL: Final = (AuthError, RateLimited)


# Without slots (as the jobs' counts classes): a result class inherits its job's counts and
# RunTotals, and two slotted bases cannot be combined.
@attrs.define(slots=False)
class Counts:
    """
    The counts every job keeps: ``products`` named, ``removed`` by ``prune``, ``failed``
    (see the warnings), ``unlisted`` products (gone or forbidden). Mutable, the job's own;
    a job's counts class adds its fields, and its result class inherits them.
    """

    products: int = 0
    removed: int = 0
    failed: int = 0
    unlisted: int = 0


@attrs.frozen
class RunTotals:
    """
    What a run cost, the tail of every job's result: ``requests`` sent, ``retries`` made,
    ``waited`` seconds on rate limits and backoff (summed over concurrent requests),
    ``held`` seconds of wall time during which the limits or a backoff held at least one
    request back (at most ``seconds``, the run's wall time); ``dry_run`` and its
    ``planned`` lines.
    """

    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    waited: float = 0.0
    held: float = 0.0
    dry_run: bool = False
    planned: tuple[str, ...] = ()


C = TypeVar("C", bound=Counts)
R = TypeVar("R")


class _Mark:
    """The client's statistics at the start of a run, to tell what the run added."""

    def __init__(self, client: BitrixClient) -> None:
        self._stats = stats = client.stats
        self._started = time.monotonic()
        self._requests = stats.requests
        self._retries = stats.retries
        self._waited = stats.throttle_wait + stats.retry_wait
        self._held = stats.held_now()

    def totals(self) -> dict[str, Any]:
        stats = self._stats
        return {
            "seconds": time.monotonic() - self._started,
            "requests": stats.requests - self._requests,
            "retries": stats.retries - self._retries,
            "waited": stats.throttle_wait + stats.retry_wait - self._waited,
            "held": stats.held_now() - self._held,
        }


class Job(Generic[C, R]):
    """
    One run of a job: its counts (``counts``), its reporter (``bar``), its dry-run plan
    (``planned``: the lines of the file events ``bar`` tells), and the run around ``body()``.

    *result_type* is a frozen class inheriting the counts class and ``RunTotals``;
    subclasses write ``body()``, may check what they need in ``prepare()`` and add
    result fields in ``result_fields()``.
    """

    def __init__(
        self,
        client: BitrixClient,
        counts: C,
        result_type: Callable[..., R],
        bar: Progress,
        *,
        dry_run: bool,
    ) -> None:
        self.client = client
        self.counts = counts
        self.result_type = result_type
        self.bar = bar
        self.dry_run = dry_run
        self.planned: list[str] = []
        if dry_run:
            # The plan is the dry run's file events, in the one line format.
            bar.listen(self.plan)

    def plan(self, event: FileEvent) -> None:
        """One line of a dry run's plan."""
        self.planned.append(event.line)

    async def prepare(self) -> None:
        """What comes before any request (checks of the folder): its errors end no run."""

    async def body(self) -> None:
        raise NotImplementedError

    def result_fields(self) -> dict[str, Any]:
        """Fields of the result beyond the counts and ``RunTotals`` (none by default)."""
        return {}

    def result(self, totals: dict[str, Any]) -> R:
        """The result now: the counts so far and the run's totals."""
        return self.result_type(
            **attrs.asdict(self.counts, recurse=False),
            **totals,
            **self.result_fields(),
            dry_run=self.dry_run,
            planned=tuple(self.planned),
        )

    async def run(self, on_finish: Callable[[R], object] | None = None) -> R:
        """
        ``prepare()``, then ``body()``; once the body has started, the result goes to
        *on_finish* however the run ends.
        """
        mark = _Mark(self.client)
        try:
            await self.prepare()
        except BaseException:
            self.bar.close()
            raise
        try:
            await self.body()
        finally:
            self.bar.close()
            result = self.result(mark.totals())
            if on_finish is not None:
                on_finish(result)
        return result


async def run_bounded(tasks: Iterable[Awaitable[None]], limit: int) -> None:
    """
    Run *tasks* with at most *limit* at once; the first failure cancels the rest.

    (``asyncio.TaskGroup`` does this from Python 3.11; 3.10 is supported.) The iterable
    is read lazily: a task is made only when a place is free.
    """
    running: set[asyncio.Future[None]] = set()
    try:
        for task in tasks:
            if len(running) >= limit:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                _raise_first(done)
            running.add(asyncio.ensure_future(task))
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            _raise_first(done)
    finally:
        for future in running:
            future.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def _raise_first(done: Iterable[asyncio.Future[None]]) -> None:
    for future in done:
        future.result()  # re-raises its failure; run_bounded cancels the rest
