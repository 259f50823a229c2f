"""
How many deletes ``prune`` may make in one run, for both jobs.

Prune's deletes are decided only after every listing of the run (or of an upload's
round) succeeded, and a run makes at most ``max_delete`` of them: beyond that, or when a
product could not be listed, none is made, the run says why and counts them held back.
A folder emptied by mistake, an unmounted share, a catalog answering empty: each looks
like many images gone, and a delete cannot be taken back.
"""

from __future__ import annotations

from .._wire.text import plural

__all__ = ["DeleteBound"]


class DeleteBound:
    """The deletes one run has decided so far, against its ``max_delete``."""

    def __init__(self, max_delete: int) -> None:
        self.max_delete = max_delete
        self.decided = 0

    def why_not(self, count: int, *, unlisted: int) -> str | None:
        """
        Why *count* more deletes may not be made, in words, or ``None`` when they may (and
        then they count as decided).
        """
        if not count:
            return None
        if unlisted:
            return f"{plural(unlisted, 'product')} could not be listed"
        if self.decided + count > self.max_delete:
            return (
                f"more than max_delete ({self.max_delete}); check the folder, "
                "or allow more (--max-delete)"
            )
        self.decided += count
        return None
