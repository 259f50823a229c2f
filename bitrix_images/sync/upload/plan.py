"""
What an upload sends for one product, decided by name (pure: plain data in, no I/O).

A folder's file is added when the product has no image of its name; with ``prune``, an
image is deleted when no file of the folder has its name (a nameless image cannot be
matched, so it stays). After a command whose outcome is unknown, the next listing of its
product tells whether it was applied: ``applied`` counts it from that listing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Final, TypeAlias

import attrs

from ...models import ProductImage
from .scan import Folder, ImageFile

__all__ = ["ADD", "DELETE", "Key", "Op", "ProductPlan", "applied", "plan_product"]

ADD: Final = "catalog.productImage.add"
DELETE: Final = "catalog.productImage.delete"

# What identifies a command across listings: ("add", name) or ("delete", image id).
Key: TypeAlias = tuple[str, "str | int"]


@attrs.frozen
class Op:
    """One command: an add of *file*, or a delete of *image*."""

    product_id: int
    file: ImageFile | None = None
    image: ProductImage | None = None

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

    def planned(self) -> str:
        """The line of a dry run."""
        if self.file is None:
            return f"delete {self.shown}"
        return f"add {self.shown} as {self.file.name!r}, {self.file.type.value}"


@attrs.frozen
class ProductPlan:
    """One product's commands, and how many of its files it has already."""

    adds: tuple[Op, ...] = ()
    deletes: tuple[Op, ...] = ()
    present: int = 0


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
    adds: list[Op] = []
    present = 0
    for file in folder.files:
        if (file.product_id, file.name) in given_up:
            continue
        if file.name in have:
            present += 1
            continue
        adds.append(Op(file.product_id, file=file))
    deletes: list[Op] = []
    if prune:
        deletes = [
            Op(folder.product_id, image=image)
            for image in images
            # A nameless image cannot be matched with a file: it stays.
            if image.name is not None and image.name not in folder.names
        ]
    return ProductPlan(tuple(adds), tuple(deletes), present)


def applied(keys: Iterable[Key], images: Sequence[ProductImage]) -> tuple[int, int]:
    """
    Of the commands *keys* whose outcome was unknown, how many the product's new listing
    (*images*) shows applied: ``(added, removed)``.
    """
    names = {image.name for image in images}
    ids = {image.id for image in images}
    added = removed = 0
    for kind, value in keys:
        if kind == "add" and value in names:
            added += 1
        elif kind == "delete" and value not in ids:
            removed += 1
    return added, removed
