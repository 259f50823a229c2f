"""The commands: ``images`` (one call each, JSON out), ``jobs`` (mirror, upload), ``doctor``
and ``catalogs``."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

from ..options import (
    AddOptions,
    CatalogsOptions,
    CommandOptions,
    DoctorOptions,
    FieldsOptions,
    ImageOptions,
    ListOptions,
    MirrorOptions,
)
from .catalogs import catalogs_command
from .doctor import doctor_command
from .images import add_image, delete_image, get_image, list_fields, list_images
from .jobs import Failed, mirror_command, upload_command

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["Failed", "run_command"]


async def run_command(
    client: BitrixClient,
    command: str,
    options: CommandOptions,
    out: IO[str],
    lines: IO[str] | None = None,
) -> int:
    """Run *command* with its *options*; *lines*: an open products file (``mirror``)."""
    if isinstance(options, ListOptions):
        return await list_images(client, options, out)
    if isinstance(options, ImageOptions):
        if command == "get":
            return await get_image(client, options, out)
        return await delete_image(client, options, out)
    if isinstance(options, AddOptions):
        return await add_image(client, options, out)
    if isinstance(options, FieldsOptions):
        return await list_fields(client, out)
    if isinstance(options, CatalogsOptions):
        return await catalogs_command(client, options, out)
    if isinstance(options, DoctorOptions):
        return await doctor_command(client, options, out)
    if isinstance(options, MirrorOptions):
        return await mirror_command(client, options, out, lines)
    return await upload_command(client, options, out)
