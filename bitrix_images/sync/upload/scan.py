"""
The source folder of an upload: ``SRC/<product_id>/<file>``, read once, before any request.

Two name prefixes mark the card's own pictures, and are not part of the name sent:
``detail@front.jpg`` is the ``DETAIL_PICTURE`` named ``front.jpg``, ``preview@small.jpg``
the ``PREVIEW_PICTURE`` ``small.jpg``; every other image file a ``MORE_PHOTO``. Files
that are not JPEG, PNG, GIF, WEBP or BMP images (the check ``client.images.add`` makes)
are reported and skipped. Blocking file-system code: ``scan`` runs in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from ...images import is_image
from ...models import ImageType

__all__ = ["DETAIL_PREFIX", "PREVIEW_PREFIX", "Folder", "ImageFile", "Scanned", "scan"]

DETAIL_PREFIX: Final = "detail@"
PREVIEW_PREFIX: Final = "preview@"
_HEAD: Final = 16  # bytes enough for every magic number images.is_image knows


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
            return self.path.stat().st_size
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


def scan(src: Path, warn: Callable[[str], None]) -> Scanned:
    """The product folders of *src* and their image files; *warn* names each one skipped."""
    found = Scanned()
    for entry in sorted(src.iterdir(), key=lambda path: path.name):
        if entry.name.startswith("."):
            continue
        if not (entry.name.isdigit() and int(entry.name) > 0 and entry.is_dir()):
            warn(f"{entry.name}: not a product folder (named by a product id), skipped")
            continue
        product_id = int(entry.name)
        files: list[ImageFile] = []
        names: set[str] = set()
        for path in sorted(entry.iterdir(), key=lambda path: path.name):
            file = _image_file(product_id, path, warn, found)
            if file is None:
                continue
            if file.name in names:
                warn(f"{file.shown}: another file of this folder is named {file.name!r} too")
                found.failed += 1
                continue
            names.add(file.name)
            files.append(file)
        found.files += len(files)
        found.folders.append(Folder(product_id, tuple(files), frozenset(names)))
    return found


def _image_file(
    product_id: int, path: Path, warn: Callable[[str], None], found: Scanned
) -> ImageFile | None:
    if path.name.startswith("."):
        return None  # .DS_Store, editors' and sync tools' files
    shown = f"{product_id}/{path.name}"
    if not path.is_file():
        warn(f"{shown}: not a regular file, skipped")
        return None
    with path.open("rb") as source:
        head = source.read(_HEAD)
    if not is_image(head):
        warn(f"{shown}: not a JPEG, PNG, GIF, WEBP or BMP image, skipped")
        found.not_images += 1
        return None
    kind = ImageType.MORE_PHOTO
    name = path.name
    for prefix, marked in (
        (DETAIL_PREFIX, ImageType.DETAIL_PICTURE),
        (PREVIEW_PREFIX, ImageType.PREVIEW_PICTURE),
    ):
        if name.lower().startswith(prefix):
            name, kind = name[len(prefix) :], marked
            break
    if not name.strip():
        warn(f"{shown}: nothing after the {path.name!r} prefix, skipped")
        found.failed += 1
        return None
    if "\\" in name:
        # CRestUtil::saveFile keeps what follows the last slash or backslash; the image
        # would get another name, and the next run would add it again.
        warn(f"{shown}: the portal cuts names at a backslash; rename the file, skipped")
        found.failed += 1
        return None
    return ImageFile(product_id, path, name, kind)
