"""What a ``mirror`` run counts as it goes, and the result it ends with."""

from __future__ import annotations

import attrs

from .._wire.text import plural
from .frame import Counts, RunTotals

__all__ = ["MirrorCounts", "MirrorResult"]


@attrs.define(slots=False)
class MirrorCounts(Counts):
    """The running counts of a mirror; ``MirrorResult`` inherits them."""

    images: int = 0
    downloaded: int = 0
    skipped: int = 0
    adopted: int = 0
    bytes: int = 0
    via_public: int = 0
    via_rest: int = 0
    held_back: int = 0  # files prune would remove but did not (max_delete, a listing failed)


@attrs.frozen
class MirrorResult(RunTotals, MirrorCounts):
    """
    What one mirror run did: the counts the command line prints.

    ``downloaded`` files were fetched; ``skipped`` were in place already (by the manifest,
    or, after a rebind, by their bytes); ``adopted`` were in place but unrecorded (a run
    stopped between a file's rename and its record) and are recorded now; ``removed`` files
    were pruned (with ``dry_run``: would be), ``held_back`` were not although their images
    are gone (more than ``max_delete``, or a product could not be listed: see the
    warnings); ``failed`` images could not be fetched, or their path holds what is not a
    regular file (a FIFO); ``unlisted`` products could not be listed (gone, or
    forbidden). Of the files downloaded, ``via_public`` came through their
    public links and ``via_rest`` through REST; ``fallbacks`` counts, by reason, the images
    whose public link did not give them (``via="auto"``), and ``public_given_up`` says why
    the run stopped trying public links, if it did. ``planned`` holds the lines of a dry
    run; the rest is ``RunTotals``.
    """

    fallbacks: tuple[tuple[str, int], ...] = ()
    public_given_up: str | None = None

    def summary(self) -> str:
        """The closing line of a run."""
        fetched = "to download" if self.dry_run else "downloaded"
        line = (
            f"{plural(self.products, 'product')}, {plural(self.images, 'image')} "
            f"({self.downloaded} {fetched}, {self.skipped} skipped"
        )
        if self.adopted:
            line += f", {self.adopted} adopted"
        if self.failed:
            line += f", {self.failed} failed"
        if self.removed or self.dry_run or self.held_back:
            line += f", {self.removed} {'to remove' if self.dry_run else 'removed'}"
        if self.held_back:
            line += f", {plural(self.held_back, 'removal')} held back"
        if self.unlisted:
            line += f"; {plural(self.unlisted, 'product')} could not be listed"
        line += f"), {self.bytes} bytes in {self.seconds:.1f} s"
        if self.downloaded and not self.dry_run:
            line += f"; {self.via_public} via public links, {self.via_rest} via REST"
            if self.fallbacks:
                reasons = ", ".join(f"{reason}: {count}" for reason, count in self.fallbacks)
                line += f" ({reasons})"
        # Wall-clock time: requests that waited together count once, not once each.
        return (
            f"{line}; {plural(self.retries, 'retry', 'retries')}, "
            f"{self.held:.1f} s held back by the limits"
        )
