"""
The download of an image's file for ``client.images``: ``Files``, which ``Images`` holds.

Checks the arguments, reserves the target and its temporary file beside it
(``_net.files``), and fetches through the public link or the signed URL
(``_calls.links``); a failure leaves no partial file.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from ._calls.links import PublicLinks, check_via
from ._net import files as _files
from .models import ProductImage

__all__ = ["FetchedFile", "Files", "type_name"]


@attrs.frozen
class FetchedFile:
    """A file ``Images.fetch_file`` wrote: its *path*, and the route it came by (*via*)."""

    path: Path
    via: str


class Files:
    """The downloads of ``client.images``, through the client's *links*."""

    def __init__(self, links: PublicLinks) -> None:
        self._links = links

    async def fetch(
        self, image: ProductImage, dest: Path | str, *, via: str, durable: bool
    ) -> FetchedFile:
        """``Images.fetch_file``: check, reserve the target, fetch, and say the route."""
        if not isinstance(image, ProductImage):
            raise TypeError(f"image must be a ProductImage, got {type_name(image)}")
        if not isinstance(dest, (str, Path)):
            raise TypeError(f"dest must be a Path or str, got {type_name(dest)}")
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be a bool, got {type_name(durable)}")
        via = check_via(via)
        target, part = _files.reserve(os.fspath(dest), image)
        try:
            route = await self._links.fetch(image, part, target, via=via, durable=durable)
        except BaseException:
            _files.discard(part)
            raise
        return FetchedFile(Path(target), route)


def type_name(value: object) -> str:
    return type(value).__name__
