"""
A job's progress bar and warnings on a terminal (tqdm), or nothing.

The upload's bar counts products, the unit whose number is known before the run when the
ids are given, a products file can be counted, or ``catalog.product.list`` reports
``total``: then it shows a percentage and an ETA. The mirror's counts images (``per_image``),
so that it moves with every file, even inside a product of thousands of images: its length
grows as products are listed, and once the listing has ended it shows a percentage and an
ETA over images. Images downloaded and skipped are counted apart, and the
rate shown is of downloads only, so a resumed run that skips thousands of files does not
claim a speed it does not have. Warnings go above the bar, through ``printable``: image
names and portal messages may hold terminal escape sequences.

The reporter also tells each file's ``FileEvent`` (``sync.events``) to whoever listens
(``on_event``, a dry run's plan); with no listener no event is made, so a mirror of a
million images already in place makes no object per file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Final, NoReturn

from tqdm import tqdm

from .events import ADD, FAIL, KEEP, REMOVE, UNLISTED, FileEvent
from .terminal import warn

__all__ = ["Progress", "human_size", "write_line"]

_KNOWN: Final = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} products "
    "[{elapsed}<{remaining}{postfix}]"
)
_UNKNOWN: Final = "{desc}: {n_fmt} products [{elapsed}{postfix}]"
# A bar over images (mirror): files handled of the images listed so far, then, once the
# listing has ended, of them all, with a percentage and an ETA.
_IMAGES_LISTING: Final = "{desc}: {n_fmt}/{total_fmt} images listed so far [{elapsed}{postfix}]"
_IMAGES_KNOWN: Final = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} images [{elapsed}<{remaining}{postfix}]"
)
_IMAGES_NONE: Final = "{desc}: {n_fmt} images [{elapsed}{postfix}]"


def human_size(size: float) -> str:
    """Bytes in the largest unit that keeps the number under 1000 (``1.2 MB``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def write_line(line: str, stream: IO[str]) -> None:
    """One line on *stream*, with any bar on a terminal cleared first and drawn again after."""
    tqdm.write(line, file=stream)


class Progress:
    """
    The reporter of one job: its bar on *stream* (``None``: no bar), and its warnings to
    *warnings* (``None``: the ``bitrix_images`` logger).

    The bar is named *desc*; the files moved (downloaded, or added by ``upload``) are
    counted under *verb*, with their rate and bytes. With ``per_image`` (mirror) the bar
    counts images instead of products: each file handled moves it, the images of each
    product listed add to its length, and once the listing has ended (``listing_done``) it
    shows a percentage and an ETA over images; the products go to the text beside it.
    Each file handled is a ``FileEvent`` for *on_event* and the listeners added by
    ``listen()``.
    """

    def __init__(
        self,
        stream: IO[str] | None,
        warnings: IO[str] | None,
        *,
        total: int | None = None,
        desc: str = "mirror",
        verb: str = "downloaded",
        per_image: bool = False,
        on_event: Callable[[FileEvent], object] | None = None,
    ) -> None:
        self._listeners: list[Callable[[FileEvent], object]] = []
        if on_event is not None:
            self._listeners.append(on_event)
        self._warnings = warnings
        self._verb = verb
        self._per_image = per_image
        self._products = 0
        self._products_total = total
        self._listed = 0
        self._bar: tqdm[NoReturn] | None = None
        self.downloaded = 0
        self.skipped = 0
        self.failed = 0
        self.bytes = 0
        self._first_download: float | None = None
        if stream is not None:
            self._bar = tqdm(
                file=stream,
                total=None if per_image else total,
                desc=desc,
                dynamic_ncols=True,
                bar_format=_IMAGES_NONE if per_image else _KNOWN if total is not None else _UNKNOWN,
            )

    def set_total(self, total: int) -> None:
        """The number of products, once known (``catalog.product.list``'s ``total``)."""
        if self._per_image:
            if self._products_total is None:
                self._products_total = total
                self._show()
            return
        if self._bar is not None and self._bar.total is None:
            self._bar.total = total
            self._bar.bar_format = _KNOWN
            self._bar.refresh()

    def product_done(self) -> None:
        """One product is listed and each of its files planned."""
        self._products += 1
        if self._bar is not None and not self._per_image:
            self._bar.update(1)

    def images_listed(self, count: int) -> None:
        """*count* more images listed (``per_image``): the bar grows by them."""
        self._listed += count
        bar = self._bar
        if bar is not None and self._per_image and count:
            bar.total = self._listed
            self._show()
            if bar.bar_format != _IMAGES_LISTING:
                bar.bar_format = _IMAGES_LISTING
                bar.refresh()  # the new shape at once; then tqdm's own pace

    def listing_done(self) -> None:
        """Every image is listed (``per_image``): from now on a percentage and an ETA."""
        bar = self._bar
        if bar is not None and self._per_image and self._listed:
            bar.total = self._listed
            bar.bar_format = _IMAGES_KNOWN
            bar.refresh()

    def _moved(self) -> None:
        """One file handled: the per-image bar moves (tqdm redraws at most 10 times a second)."""
        if self._bar is not None and self._per_image:
            self._bar.update(1)

    def listen(self, callback: Callable[[FileEvent], object]) -> None:
        """Tell *callback* every file event from now on (after ``on_event``)."""
        self._listeners.append(callback)

    def tell(self, event: FileEvent) -> None:
        """Hand *event* to every listener; the bar does not move (a dry run's plan)."""
        for listener in self._listeners:
            listener(event)

    def skip(self, product_id: int, name: str | None, image_id: int | None = None) -> None:
        """One image already in place."""
        self.skipped += 1
        self._show()
        self._moved()
        if self._listeners:
            self.tell(FileEvent(KEEP, product_id, name, image_id))

    def fail(self, product_id: int, name: str | None, image_id: int | None, reason: str) -> None:
        """One image that could not be moved, and why."""
        self.failed += 1
        self._show()
        self._moved()
        if self._listeners:
            self.tell(FileEvent(FAIL, product_id, name, image_id, reason=reason))

    def add_download(
        self,
        size: int,
        product_id: int,
        name: str | None,
        image_id: int | None = None,
        *,
        kind: str = ADD,
        replaces: str | None = None,
        replaces_id: int | None = None,
    ) -> None:
        """One file moved (downloaded, or added), *size* bytes; *kind* ``replace``: in
        place of an older file or image."""
        if self._first_download is None:
            self._first_download = time.monotonic()
        self.downloaded += 1
        self.bytes += size
        self._show()
        self._moved()
        if self._listeners:
            self.tell(FileEvent(kind, product_id, name, image_id, size, replaces, replaces_id))

    def removed(self, product_id: int, name: str | None, image_id: int) -> None:
        """One file or image removed by prune."""
        if self._listeners:
            self.tell(FileEvent(REMOVE, product_id, name, image_id))

    def unlisted(self, product_id: int, reason: str) -> None:
        """One product that could not be listed (gone, forbidden, malformed)."""
        if self._listeners:
            self.tell(FileEvent(UNLISTED, product_id, reason=reason))

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
        if self._per_image:
            total = self._products_total
            listed = f"{self._products}" if total is None else f"{self._products}/{total}"
            parts.insert(0, f"{listed} products")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)

    def warn(self, text: str) -> None:
        """One warning line, made printable, above the bar."""
        bar, stream = self._bar, self._warnings
        warn(text, stream, write=None if bar is None else lambda line: bar.write(line, file=stream))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
