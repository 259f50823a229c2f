"""
What an upload sends for one product, decided by name (pure: plain data in, no I/O).

A folder's file is added when the product has no image of its name; with ``prune``, an
image is deleted when no entry of the folder has its name (a nameless image cannot be
matched, so it stays; a name in the folder protects its image whatever became of the file:
0 bytes, a dangling link, not an image), and never while the folder holds no readable
image (an unmounted share, a copy under way). After a command whose outcome is unknown,
the next listing of its product tells whether it was applied: ``applied`` tells it from
that listing. What each command does is a ``FileEvent`` (``sync.events``): its line is the
dry run's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Final, TypeAlias

import attrs

from ...models import ImageType, ProductImage
from .. import events
from ..events import FileEvent
from .scan import Folder, ImageFile

__all__ = ["ADD", "DELETE", "Key", "Op", "ProductPlan", "applied", "plan_product"]

ADD: Final = "catalog.productImage.add"
DELETE: Final = "catalog.productImage.delete"

_CARD: Final = (ImageType.DETAIL_PICTURE, ImageType.PREVIEW_PICTURE)

# What identifies a command across listings: ("add", name) or ("delete", image id).
Key: TypeAlias = tuple[str, "str | int"]


@attrs.frozen
class Op:
    """One command: an add of *file*, or a delete of *image*."""

    product_id: int
    file: ImageFile | None = None
    image: ProductImage | None = None
    replaces: ProductImage | None = None  # the card picture an add of one replaces

    @property
    def method(self) -> str:
        return ADD if self.file is not None else DELETE

    @property
    def shown(self) -> str:
        if self.file is not None:
            return self.file.shown
        assert self.image is not None  # noqa: S101 -- one of the two is set
        return f"{self.product_id}/{self.image.name} (image {self.image.id})"

    @property
    def key(self) -> Key:
        if self.file is not None:
            return ("add", self.file.name)
        assert self.image is not None  # noqa: S101 -- one of the two is set
        return ("delete", self.image.id)

    @property
    def name(self) -> str | None:
        """The file's name in its folder (an add), or the image's on the portal (a delete)."""
        if self.file is not None:
            return self.file.path.name
        assert self.image is not None  # noqa: S101 -- one of the two is set
        return self.image.name

    def event(self) -> FileEvent:
        """
        What the command does to its file: ``+ 3/front.png``, ``~ 3/detail@front.png
        replaces 'photo-1.png' (id 31)``, ``- 3/old.png (id 40)`` as lines.
        """
        if self.file is None:
            assert self.image is not None  # noqa: S101 -- a delete names its image
            return FileEvent(events.REMOVE, self.product_id, self.image.name, self.image.id)
        if self.replaces is not None:
            old = self.replaces
            return FileEvent(
                events.REPLACE, self.product_id, self.name, replaces=old.name, replaces_id=old.id
            )
        return FileEvent(events.ADD, self.product_id, self.name)

    def planned(self) -> str:
        """The line of a dry run (printable: names may hold terminal escapes)."""
        return self.event().line


@attrs.frozen
class ProductPlan:
    """One product's commands, and how many of its files it has already."""

    adds: tuple[Op, ...] = ()
    deletes: tuple[Op, ...] = ()
    present: int = 0
    kept: tuple[ImageFile, ...] = ()  # the files the product has already ("= 3/kept.png")


def plan_product(
    folder: Folder,
    images: Sequence[ProductImage],
    *,
    prune: bool,
    given_up: Collection[tuple[int, str]] = (),
) -> ProductPlan:
    """
    The commands that bring the product of *folder*, which has *images*, in step with it.

    Files in *given_up* (``(product id, name)``: failed for good earlier in the run) are
    not planned again.
    """
    have = {image.name for image in images}
    card = {image.type: image for image in images if image.type in _CARD}
    adds: list[Op] = []
    kept: list[ImageFile] = []
    for file in folder.files:
        if (file.product_id, file.name) in given_up:
            continue
        if file.name in have:
            kept.append(file)
            continue
        # Adding a card picture replaces the product's previous one (portal behaviour).
        replaces = card.get(file.type) if file.type in _CARD else None
        adds.append(Op(file.product_id, file=file, replaces=replaces))
    deletes: list[Op] = []
    # A folder with no readable image prunes nothing: a share not mounted, files still
    # being copied. (To empty a product on purpose: delete its images with ``delete``.)
    if prune and folder.files:
        deletes = [
            Op(folder.product_id, image=image)
            for image in images
            # A nameless image cannot be matched with a file: it stays.
            if image.name is not None and image.name not in folder.names
        ]
    return ProductPlan(tuple(adds), tuple(deletes), len(kept), tuple(kept))


def applied(
    product_id: int, keys: Iterable[Key], images: Sequence[ProductImage]
) -> list[FileEvent]:
    """
    Of the commands *keys* whose outcome was unknown, the ones the product's new listing
    (*images*) shows applied, as events: an add by the name sent, a delete by image id.
    """
    names = {image.name for image in images}
    ids = {image.id for image in images}
    done: list[FileEvent] = []
    for kind, value in keys:
        if kind == "add" and value in names:
            done.append(FileEvent(events.ADD, product_id, str(value)))
        elif kind == "delete" and value not in ids:
            done.append(FileEvent(events.REMOVE, product_id, image_id=int(value)))
    return done
