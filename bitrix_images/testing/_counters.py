"""What the portal saw: :class:`Counters` and the :class:`ReceivedCall` records."""

from __future__ import annotations

from collections import Counter

import attrs

__all__ = ["Counters", "ReceivedCall"]


@attrs.frozen
class ReceivedCall:
    """One outer REST request as the portal parsed it."""

    http_method: str
    method: str
    params: dict[str, object]


@attrs.define
class Counters:
    """What the portal saw since start (or the last :meth:`reset`).

    ``requests`` counts the HTTP requests of the portal's own origin except public file
    answers, which ``files`` counts (on either origin, by status in ``files_by_status``):
    a file from ``/upload/`` is a hit on the web server, not REST. ``rows_read`` is the
    rows ``catalog.product.list`` read in the portal's database: an offset page reads every
    row it skips plus its own, and counts the matching rows (``COUNT(*)``); a page with
    ``start=-1`` reads only its own rows (DOCS settings/performance/huge-data.md).
    """

    requests: int = 0
    by_method: Counter[str] = attrs.Factory(Counter)
    commands: Counter[str] = attrs.Factory(Counter)
    by_status: Counter[int] = attrs.Factory(Counter)
    rate_limited: int = 0
    operating_refused: int = 0  # requests and batch commands refused OPERATION_TIME_LIMIT
    in_flight: int = 0
    max_in_flight: int = 0
    refreshes: int = 0
    calls: list[ReceivedCall] = attrs.Factory(list)
    files: int = 0
    files_by_status: Counter[int] = attrs.Factory(Counter)
    rows_read: int = 0

    def reset(self) -> None:
        """Zero every counter (``in_flight`` keeps the requests still running)."""
        self.requests = 0
        self.by_method.clear()
        self.commands.clear()
        self.by_status.clear()
        self.rate_limited = 0
        self.operating_refused = 0
        self.max_in_flight = self.in_flight
        self.refreshes = 0
        self.calls.clear()
        self.files = 0
        self.files_by_status.clear()
        self.rows_read = 0
