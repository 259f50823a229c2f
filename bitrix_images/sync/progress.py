"""
A job's progress bar and warnings on a terminal (tqdm), or nothing.

The bar counts products, the unit whose number is known before the run when the ids are
given, a products file can be counted, or ``catalog.product.list`` reports ``total``: then
it shows a percentage and an ETA. Images downloaded and skipped are counted apart, and the
rate shown is of downloads only, so a resumed run that skips thousands of files does not
claim a speed it does not have. Warnings go above the bar, through ``printable``: image
names and portal messages may hold terminal escape sequences.
"""

from __future__ import annotations

import time
from typing import IO, Final, NoReturn

from tqdm import tqdm

from .terminal import warn

__all__ = ["Progress", "human_size"]

_KNOWN: Final = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} products "
    "[{elapsed}<{remaining}{postfix}]"
)
_UNKNOWN: Final = "{desc}: {n_fmt} products [{elapsed}{postfix}]"


def human_size(size: float) -> str:
    """Bytes in the largest unit that keeps the number under 1000 (``1.2 MB``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class Progress:
    """
    The reporter of one job: its bar on *stream* (``None``: no bar), and its warnings to
    *warnings* (``None``: the ``bitrix_images`` logger).

    The bar is named *desc*; the files moved (downloaded, or added by ``upload``) are
    counted under *verb*, with their rate and bytes.
    """

    def __init__(
        self,
        stream: IO[str] | None,
        warnings: IO[str] | None,
        *,
        total: int | None = None,
        desc: str = "mirror",
        verb: str = "downloaded",
    ) -> None:
        self._warnings = warnings
        self._verb = verb
        self._bar: tqdm[NoReturn] | None = None
        self.downloaded = 0
        self.skipped = 0
        self.failed = 0
        self.bytes = 0
        self._first_download: float | None = None
        if stream is not None:
            self._bar = tqdm(
                file=stream,
                total=total,
                desc=desc,
                dynamic_ncols=True,
                bar_format=_KNOWN if total is not None else _UNKNOWN,
            )

    def set_total(self, total: int) -> None:
        """The number of products, once known (``catalog.product.list``'s ``total``)."""
        if self._bar is not None and self._bar.total is None:
            self._bar.total = total
            self._bar.bar_format = _KNOWN
            self._bar.refresh()

    def product_done(self) -> None:
        """One product is listed and each of its files planned."""
        if self._bar is not None:
            self._bar.update(1)

    def skip(self) -> None:
        """One image already in place."""
        self.skipped += 1
        self._show()

    def fail(self) -> None:
        """One image that could not be moved."""
        self.failed += 1
        self._show()

    def add_download(self, size: int) -> None:
        """One file moved (downloaded, or added), *size* bytes."""
        if self._first_download is None:
            self._first_download = time.monotonic()
        self.downloaded += 1
        self.bytes += size
        self._show()

    def _show(self) -> None:
        if self._bar is None:
            return
        parts = [f"{self.downloaded} {self._verb}"]
        if self._first_download is not None:
            # At least a millisecond: the first download may finish in the same clock tick.
            elapsed = max(time.monotonic() - self._first_download, 1e-3)
            parts[0] += f" ({self.downloaded / elapsed:.1f}/s)"
        parts.append(f"{self.skipped} skipped")
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.append(human_size(self.bytes))
        self._bar.set_postfix_str(", ".join(parts), refresh=False)

    def warn(self, text: str) -> None:
        """One warning line, made printable, above the bar."""
        bar, stream = self._bar, self._warnings
        warn(text, stream, write=None if bar is None else lambda line: bar.write(line, file=stream))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
