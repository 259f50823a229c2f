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

import logging
import time
from pathlib import Path
from typing import IO, Final, NoReturn

from tqdm import tqdm

from ._terminal import printable

__all__ = ["Progress", "count_ids", "human_size"]

log = logging.getLogger("bitrix_images")

_KNOWN: Final = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} products "
    "[{elapsed}<{remaining}{postfix}]"
)
_UNKNOWN: Final = "{desc}: {n_fmt} products [{elapsed}{postfix}]"


def count_ids(path: Path) -> int | None:
    """
    The product ids in a products file, counted in one quick pass (the bar's total).

    Lines are counted as ``file_ids`` reads them: blank lines and ``#`` comments are not
    ids. ``None`` for what cannot be read twice (standard input, a pipe) or at all; a line
    that is not an id is reported by ``file_ids`` when its turn comes.
    """
    try:
        if not path.is_file():
            return None
        with path.open("rb") as lines:
            return sum(1 for line in lines if line.split(b"#", 1)[0].strip())
    except OSError:
        return None


def human_size(size: float) -> str:
    """Bytes in the largest unit that keeps the number under 1000 (``1.2 MB``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class Progress:
    """
    The bar of one job, on *stream* (``None``: no bar); warnings to *warnings*.

    *warnings* ``None`` sends them to the ``bitrix_images`` logger instead.
    """

    def __init__(
        self,
        stream: IO[str] | None,
        warnings: IO[str] | None,
        *,
        total: int | None = None,
        prog: str = "bitrix-images",
    ) -> None:
        self._warnings = warnings
        self._prog = prog
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
                desc="mirror",
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
        """One product is listed and each of its images queued or skipped."""
        if self._bar is not None:
            self._bar.update(1)

    def skip(self) -> None:
        """One image already in place."""
        self.skipped += 1
        self._show()

    def fail(self) -> None:
        """One image that could not be fetched."""
        self.failed += 1
        self._show()

    def add_download(self, size: int) -> None:
        """One image downloaded, *size* bytes."""
        if self._first_download is None:
            self._first_download = time.monotonic()
        self.downloaded += 1
        self.bytes += size
        self._show()

    def _show(self) -> None:
        if self._bar is None:
            return
        parts = [f"{self.downloaded} downloaded"]
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
        if self._warnings is None:
            log.warning("%s", printable(text))
            return
        line = f"{self._prog}: warning: {printable(text)}"
        if self._bar is not None:
            self._bar.write(line, file=self._warnings)
        else:
            print(line, file=self._warnings)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
