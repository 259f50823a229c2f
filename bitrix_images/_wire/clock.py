"""
The clock every client reads and sleeps on, passed in rather than branched on.

Pacing, backoff and the limits' arithmetic take their time from ``now()`` / ``monotonic()``
and do their sleeping through ``current()`` (like gidgethub's ``abc.sleep``). In production
that is ``Clock``, the real time. ``instant_retries()`` swaps in ``InstantRetries``, a clock
whose sleeps return at once and move its time on by what was asked (like stamina's
``set_testing()``): the rules run as if the time had passed, and nothing in the call path
knows it is being tested.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

__all__ = ["Clock", "InstantRetries", "current", "instant_retries", "monotonic", "now"]


class Clock:
    """The real time: Unix and monotonic seconds, sleeping, and waiting for a future."""

    def time(self) -> float:
        """Unix seconds (compared with the portal's own times)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds for measuring waits."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep *seconds*."""
        await asyncio.sleep(seconds)

    async def wait(self, future: asyncio.Future[None], timeout: float | None) -> float:
        """Wait until *future* is done or *timeout* seconds (``None``: no limit) have
        passed; return the seconds waited."""
        started = self.monotonic()
        await asyncio.wait({future}, timeout=timeout)
        return self.monotonic() - started


_REAL = Clock()
# The active instant_retries() blocks, innermost last (a process-wide switch, like
# stamina's set_testing(): the clients under test are usually built elsewhere).
_INSTANT: list[InstantRetries] = []
# How far the instant clocks have moved on past the real time; back to 0 when the last
# block ends.
_skew = 0.0


def current() -> Clock:
    """The clock in force: the innermost ``instant_retries()`` block's, else the real one."""
    return _INSTANT[-1] if _INSTANT else _REAL


def now() -> float:
    """Unix seconds on the clock in force (the limits' injected clock)."""
    return current().time()


def monotonic() -> float:
    """Monotonic seconds on the clock in force (the bucket's injected clock)."""
    return current().monotonic()


class InstantRetries(Clock):
    """
    While active, every wait of every client (backoff, operating-time resets, the
    client-side rate limit) returns at once; the seconds asked for are kept in ``waits``,
    and the clients' time moves on by them, so the rules play out as if they had passed.

    Made by ``bitrix_images.testing.instant_retries()``; usable as ``with`` or ``async with``.
    """

    def __init__(self, *, frozen: bool = False) -> None:
        self.waits: list[float] = []
        # Frozen: the clients' time moves on only by what they wait, never with the real
        # time, so that a test's timeline does not depend on how fast the machine runs it.
        self._frozen = (time.time(), time.monotonic()) if frozen else None

    @property
    def total(self) -> float:
        """The seconds the clients would have waited."""
        return sum(self.waits)

    def time(self) -> float:
        return (time.time() if self._frozen is None else self._frozen[0]) + _skew

    def monotonic(self) -> float:
        return (time.monotonic() if self._frozen is None else self._frozen[1]) + _skew

    async def sleep(self, seconds: float) -> None:
        self._pass(seconds)
        await asyncio.sleep(0)

    async def wait(self, future: asyncio.Future[None], timeout: float | None) -> float:
        if timeout is None:
            # Only an answer ends this wait (no time would): wait for it for real.
            return await super().wait(future, timeout)
        self._pass(timeout)
        return timeout

    def _pass(self, seconds: float) -> None:
        global _skew  # noqa: PLW0603 -- the process-wide time of the instant clocks
        self.waits.append(seconds)
        _skew += seconds

    def __enter__(self) -> InstantRetries:
        _INSTANT.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _skew  # noqa: PLW0603 -- see _pass
        _INSTANT.remove(self)
        if not _INSTANT:
            _skew = 0.0

    async def __aenter__(self) -> InstantRetries:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def instant_retries(*, frozen: bool = False) -> InstantRetries:
    """
    Make every client's waits instant for your own tests, recording what they asked for.

        with bitrix_images.testing.instant_retries() as clock:
            await client.images.get(1, 2)      # retried at once after a 503
        assert clock.waits                      # the backoffs it would have slept

    The retry rules do not change (attempts and ``max_wait`` are counted as usual); only
    the sleeping is skipped. *frozen*: the clients' time moves only by what they wait, not
    with the real time (give ``FakePortal(clock=bitrix_images._wire.clock.now)`` the same
    time, and a timeline of limits replays alike on any machine).
    """
    return InstantRetries(frozen=frozen)
