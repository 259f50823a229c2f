"""``ClientStats``: what a client has done so far, counted where it happens."""

from __future__ import annotations

import attrs

__all__ = ["ClientStats"]


@attrs.define
class ClientStats:
    """
    What a client has done so far: requests, retries and the time spent waiting.

    Attributes:
        requests: HTTP requests sent (retries, refreshes and downloads included).
        retries: attempts made again after a refusal or a failure.
        refreshes: OAuth access tokens refreshed.
        throttle_wait: seconds spent waiting on the client-side limits.
        retry_wait: seconds spent in backoff or waiting out OPERATION_TIME_LIMIT.
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
    in_flight: int = 0
    max_in_flight: int = 0
    coordinator_fallbacks: int = 0
