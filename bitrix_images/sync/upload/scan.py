"""
The source folder of an upload: ``SRC/<product_id>/<file>``, read once, before any request.

Two name prefixes mark the card's own pictures, and are not part of the name sent:
``detail@front.jpg`` is the ``DETAIL_PICTURE`` named ``front.jpg``, ``preview@small.jpg``
the ``PREVIEW_PICTURE`` ``small.jpg``; every other image file a ``MORE_PHOTO``. Files
that are not JPEG, PNG, GIF, WEBP or BMP images (the check ``client.images.add`` makes)
are reported and skipped. Blocking file-system code: ``scan`` runs in a thread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from ...images import is_image
from ...models import ImageType

__all__ = [
    "DETAIL_PREFIX",
    "MAX_FILE_BYTES",
    "PREVIEW_PREFIX",
    "Folder",
    "ImageFile",
    "Scanned",
    "open_regular",
    "read_head",
    "scan",
]

DETAIL_PREFIX: Final = "detail@"
PREVIEW_PREFIX: Final = "preview@"
_HEAD: Final = 64  # bytes enough for every header images.is_image parses
# The largest file an upload reads (a request holds it base64-encoded).
MAX_FILE_BYTES: Final = 100 * 2**20
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@attrs.frozen
class ImageFile:
    """An image file to upload: the name sent, and where the card shows it."""

    product_id: int
    path: Path
    name: str
    type: ImageType

    @property
    def shown(self) -> str:
        return f"{self.product_id}/{self.path.name}"

    def size(self) -> int:
        """The file's size now (a stat: cheaper inline than a thread hop), 0 if it is gone."""
        try:
            return self.path.lstat().st_size
        except OSError:
            return 0


@attrs.frozen
class Folder:
    """One product's folder: its image files, and every image name it holds."""

    product_id: int
    files: tuple[ImageFile, ...]
    names: frozenset[str]  # prune keeps the images of these names


@attrs.define
class Scanned:
    """What the scan found: the folders, and the files it counted on the way."""

    folders: list[Folder] = attrs.Factory(list)
    files: int = 0  # image files to upload
    not_images: int = 0  # files skipped for not being images
    failed: int = 0  # image files that cannot be uploaded as they are named
    failures: list[tuple[int, str, str]] = attrs.Factory(list)  # (product, file, why) of those

    def fail(self, product_id: int, name: str, why: str) -> None:
        """One image file that cannot be uploaded (warned about), and why."""
        self.failed += 1
        self.failures.append((product_id, name, why))


def scan(
    src: Path, warn: Callable[[str], None], *, max_file_bytes: int = MAX_FILE_BYTES
) -> Scanned:
    """
    The product folders of *src* and their image files; *warn* names each one skipped.

    Only regular files inside *src* are read: a link (to a file or a folder) is never
    followed, a FIFO or a device never opened. ``ValueError`` before any request for what
    no run can settle: two folders of one product id (``03`` and ``3``), two
    ``detail@`` (or ``preview@``) files of one product.
    """
    found = Scanned()
    by_id: dict[int, str] = {}
    for entry in sorted(src.iterdir(), key=lambda path: path.name):
        if entry.name.startswith("."):
            continue
        # ASCII digits only: str.isdigit() takes "²", which int() refuses.
        if not (entry.name.isascii() and entry.name.isdigit() and int(entry.name) > 0):
            warn(f"{entry.name}: not a product folder (named by a product id), skipped")
            continue
        if not stat.S_ISDIR(entry.lstat().st_mode):
            warn(f"{entry.name}: not a folder (a link is not followed), skipped")
            continue
        product_id = int(entry.name)
        if product_id in by_id:
            raise ValueError(
                f"folders {by_id[product_id]!r} and {entry.name!r} are both product {product_id}; "
                "keep one"
            )
        by_id[product_id] = entry.name
        found.folders.append(_folder(product_id, entry, warn, found, max_file_bytes))
    return found


def _folder(
    product_id: int, entry: Path, warn: Callable[[str], None], found: Scanned, max_file_bytes: int
) -> Folder:
    files: list[ImageFile] = []
    names: set[str] = set()
    card: dict[ImageType, ImageFile] = {}
    for path in sorted(entry.iterdir(), key=lambda path: path.name):
        if path.name.startswith("."):
            continue  # .DS_Store, editors' and sync tools' files
        # Every name protects its image from prune, whatever became of the file.
        names.add(_split(path.name)[0])
        file = _image_file(product_id, path, warn, found, max_file_bytes)
        if file is None:
            continue
        if file.type in card:
            first = card[file.type].path.name
            raise ValueError(
                f"{product_id}/{first} and {product_id}/{path.name} are both the product's "
                f"{file.type.value}; keep one"
            )
        if file.type is not ImageType.MORE_PHOTO:
            card[file.type] = file
        if any(other.name == file.name for other in files):
            why = f"another file of this folder is named {file.name!r} too"
            warn(f"{file.shown}: {why}")
            found.fail(product_id, path.name, why)
            continue
        files.append(file)
    found.files += len(files)
    return Folder(product_id, tuple(files), frozenset(names))


def _split(name: str) -> tuple[str, ImageType]:
    """The name sent for a file named *name*, and where the card shows it."""
    for prefix, marked in (
        (DETAIL_PREFIX, ImageType.DETAIL_PICTURE),
        (PREVIEW_PREFIX, ImageType.PREVIEW_PICTURE),
    ):
        if name.lower().startswith(prefix):
            return name[len(prefix) :], marked
    return name, ImageType.MORE_PHOTO


def _image_file(
    product_id: int,
    path: Path,
    warn: Callable[[str], None],
    found: Scanned,
    max_file_bytes: int,
) -> ImageFile | None:
    shown = f"{product_id}/{path.name}"
    try:
        head = read_head(path, max_file_bytes)
    except OSError as error:
        why = str(error.strerror or error)
        warn(f"{shown}: {why}, skipped")
        found.fail(product_id, path.name, why)
        return None
    except ValueError as error:
        warn(f"{shown}: {error}, skipped")
        found.fail(product_id, path.name, str(error))
        return None
    if head is None:
        warn(f"{shown}: not a regular file (a link, a FIFO, a device), skipped")
        return None
    if not is_image(head):
        warn(f"{shown}: not a JPEG, PNG, GIF, WEBP or BMP image, skipped")
        found.not_images += 1
        return None
    name, kind = _split(path.name)
    if not name.strip():
        why = f"nothing after the {path.name!r} prefix"
        warn(f"{shown}: {why}, skipped")
        found.fail(product_id, path.name, why)
        return None
    if "\\" in name:
        # CRestUtil::saveFile keeps what follows the last slash or backslash; the image
        # would get another name, and the next run would add it again.
        why = "the portal cuts names at a backslash; rename the file"
        warn(f"{shown}: {why}, skipped")
        found.fail(product_id, path.name, why)
        return None
    return ImageFile(product_id, path, name, kind)


def open_regular(path: Path, max_file_bytes: int) -> int | None:
    """
    A read-only descriptor of *path* if it is a regular file of at most *max_file_bytes*
    (``ValueError`` when larger); ``None`` for a link, a FIFO, a device. Never follows a
    link (``O_NOFOLLOW``), never blocks on a FIFO (``O_NONBLOCK``, checked with ``lstat``
    first).
    """
    if not stat.S_ISREG(path.lstat().st_mode):
        return None
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:  # swapped for a link since the lstat
            return None
        raise
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_size <= max_file_bytes:
        return fd
    os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        return None
    raise ValueError(
        f"{info.st_size} bytes, larger than the {max_file_bytes} allowed (--max-file-size)"
    )


def read_image(file: ImageFile, max_file_bytes: int) -> bytes:
    """
    The bytes of *file*, with ``open_regular``'s checks made again when it is sent: the
    file may have become a link or grown since the scan. ``ValueError`` if it is no
    longer a regular file, or too large.
    """
    fd = open_regular(file.path, max_file_bytes)
    if fd is None:
        raise ValueError("no longer a regular file (a link, a FIFO, a device)")
    with os.fdopen(fd, "rb") as source:
        # read(n) allocates n bytes first: ask for the size seen (at most the cap), plus
        # one byte that tells a file that grew since.
        content = source.read(os.fstat(fd).st_size + 1)
    if len(content) > max_file_bytes:
        raise ValueError(f"larger than the {max_file_bytes} allowed (--max-file-size)")
    return content


def read_head(path: Path, max_file_bytes: int) -> bytes | None:
    """The first bytes of *path* (``open_regular``'s checks), or ``None``: not a regular file."""
    fd = open_regular(path, max_file_bytes)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as source:
        return source.read(_HEAD)
