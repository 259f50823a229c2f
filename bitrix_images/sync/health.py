"""
Telling a portal that is down from one image that failed (pure).

A download that fails for good has already been retried (``RetryPolicy``), so one such
failure says little, but several in a row with no answer from the portal in between say
the portal is gone: connections refused, timeouts, proxy error pages, 5xx. Then every
further request would fail the same way after the same retries, and a job stops with one
error instead of a warning per image and minutes of backoff. An answer the portal gave
about one image (``NotFound``, ``AccessDenied``) proves it is up and starts the count again.
"""

from __future__ import annotations

from typing import Final

from ..exceptions import BitrixError, OutcomeUnknown, ServerError, TransportError

__all__ = ["DOWN_AFTER", "PortalHealth"]

# Failures in a row, after their retries, that make a portal "down".
DOWN_AFTER: Final = 3


class PortalHealth:
    """Counts downloads that failed for want of a portal; says when to stop."""

    def __init__(self, down_after: int = DOWN_AFTER) -> None:
        self.down_after = down_after
        self.streak = 0

    def succeeded(self) -> None:
        """A download (or any answer) came through: the portal is up."""
        self.streak = 0

    def failed(self, error: BitrixError) -> BitrixError | None:
        """
        Note a download that failed for good; return the error that stops the job, if any.

        Only failures that every request would share count: no connection, no usable answer
        (``TransportError``), or the portal's own 5xx (``ServerError``).
        """
        if not isinstance(error, (TransportError, ServerError)) or isinstance(
            error, OutcomeUnknown
        ):
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.down_after:
            return None
        return type(error)(
            f"the portal is not answering ({self.streak} downloads in a row failed after "
            f"their retries; the last: {error.description})",
            code=error.code,
            status=error.status,
            method=error.method,
            attempts=error.attempts,
        )
