"""``ClientStats``: what a client has done so far, counted where it happens."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs

from . import clock

__all__ = ["ClientStats"]


@attrs.define
class ClientStats:
    """
    What a client has done so far: requests, retries and the time spent waiting.

    Attributes:
        requests: HTTP requests sent (retries, refreshes and downloads included).
        retries: attempts made again after a refusal or a failure.
        refreshes: OAuth access tokens refreshed.
        throttle_wait: seconds spent waiting on the client-side limits, summed over the
            requests that waited (ten requests waiting one second together count ten).
        retry_wait: seconds spent in backoff or waiting out OPERATION_TIME_LIMIT, summed
            the same way.
        held: wall-clock seconds during which at least one request was waiting (on the
            limits or in a backoff): ten requests waiting one second together count one.
            What a run lost to the limits; at most the time the client has been in use.
        in_flight: requests on the wire now (zero when the client is idle).
        max_in_flight: the most requests that were on the wire at once.
        coordinator_fallbacks: round trips to a coordinator's Redis that failed, so that
            the client's own limits decided.
    """

    requests: int = 0
    retries: int = 0
    refreshes: int = 0
    throttle_wait: float = 0.0
    retry_wait: float = 0.0
    held: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    coordinator_fallbacks: int = 0
    # The requests waiting now, and since when at least one has been (for ``held``).
    _waiting: int = attrs.field(default=0, init=False, repr=False, eq=False)
    _held_since: float = attrs.field(default=0.0, init=False, repr=False, eq=False)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """
        One request waits inside this block: ``held`` grows by the time during which any
        request was waiting (the union of the waits, not their sum), on the clock in force.
        """
        if self._waiting == 0:
            self._held_since = clock.monotonic()
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1
            if self._waiting == 0:
                self.held += clock.monotonic() - self._held_since

    def held_now(self) -> float:
        """``held``, with the wait under way now (if any) counted up to this moment."""
        if self._waiting == 0:
            return self.held
        return self.held + clock.monotonic() - self._held_since
