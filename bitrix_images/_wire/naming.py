"""
Naming rules for the files the SDK and the jobs write: pure, no I/O.

- ``safe_name``: a file name for an image that is safe on any common file system.
- ``temp_prefix()`` / ``TEMP_SUFFIX``: every download's temporary name is
  ``.bxi-<host>-<pid>-<random>.part`` (``TEMP_NAME`` matches it), so a job can tell its own
  leftovers, and those of a dead process of this host, from anyone else's files.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import unicodedata
from typing import Final

from ..models import ProductImage

__all__ = ["HOST", "TEMP_NAME", "TEMP_SUFFIX", "safe_name", "temp_prefix"]

# NAME_MAX is 255 bytes on every common file system; a name we make keeps room under it for
# the "<image id>-" a caller may put in front to tell two files of one name apart.
_NAME_BYTES: Final = 255 - 40
# An extension longer than this is not one worth keeping whole ("x.<200 bytes>").
_SUFFIX_BYTES: Final = 16


def _host_tag() -> str:
    # Four hex digits of the host name: short, and enough to tell the hosts of one shared
    # folder apart (a collision only means a stale file is left for its own host to remove).
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]


HOST: Final = _host_tag()
TEMP_SUFFIX: Final = ".part"
TEMP_NAME: Final = re.compile(r"\.bxi-([0-9a-f]{4})-([0-9]{1,7})-[a-z0-9_]{8}\.part")


def temp_prefix() -> str:
    """The start of this process's temporary names (read per call: a fork has a new pid)."""
    return f".bxi-{HOST}-{os.getpid()}-"


def safe_name(image: ProductImage) -> str:
    """
    A file name for *image* that is safe on any common file system.

    No directory part, no path separator, NUL or control character; at most ``_NAME_BYTES``
    bytes of UTF-8, cut at a character boundary and keeping the extension. A name that had
    to be cut gets the image id before its extension, so two long names stay apart; an
    image without a usable name is ``image-<id>``.
    """
    raw = (image.name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in raw if unicodedata.category(c) != "Cc").strip()
    if name in ("", ".", ".."):
        return f"image-{image.id}"
    if len(name.encode()) <= _NAME_BYTES:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(suffix.encode()) > _SUFFIX_BYTES:
        stem, suffix = name, ""
    tail = f"-{image.id}" + (f".{suffix}" if suffix else "")
    room = _NAME_BYTES - len(tail.encode())
    return stem.encode()[:room].decode(errors="ignore") + tail
