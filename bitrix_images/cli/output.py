"""
What the command line prints: JSON lines on standard output, and on standard error one
line per warning or error, made printable (``sync.terminal``) and scrubbed of secrets.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import IO, Final

from yarl import URL

from .._wire.text import plural
from ..models import ImageType, ProductImage
from ..sync.terminal import PROG, printable, warn

__all__ = [
    "emit",
    "error",
    "image_json",
    "plural",
    "scrub",
    "silence_stdout",
    "snake_name",
    "warning",
]

_URL_IN_TEXT: Final = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ImageType):
        return value.value
    if isinstance(value, URL):
        return str(value)
    return value


def image_json(image: ProductImage, fields: Iterable[str]) -> dict[str, object]:
    """An image as a JSON-ready dict of *fields* (ISO 8601 times, enum values, URL strings)."""
    return {name: _jsonable(getattr(image, name)) for name in fields}


def snake_name(wire: str) -> str:
    """A field's name as printed: ``createTime`` is ``create_time``."""
    return re.sub(r"[A-Z]", lambda match: "_" + match.group().lower(), wire)


def emit(data: object, out: IO[str]) -> None:
    """One JSON line."""
    out.write(json.dumps(data, ensure_ascii=False) + "\n")


def scrub(message: str, secrets: Iterable[str]) -> str:
    """One line with no secret in it: URLs cut to their origin, known secrets masked."""

    def origin(match: re.Match[str]) -> str:
        try:
            url = URL(match.group())
            return str(url.origin()) if url.host else "<URL>"
        except ValueError:
            return "<URL>"

    text = _URL_IN_TEXT.sub(origin, message)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return " ".join(text.split())


def error(message: str, secrets: Iterable[str]) -> int:
    """The one error line of a failed command; its exit status, 1."""
    print(f"{PROG}: error: {printable(scrub(message, secrets))}", file=sys.stderr)
    return 1


def warning(message: str) -> None:
    """One warning line on standard error."""
    warn(message, sys.stderr)


def silence_stdout() -> None:
    """Point standard output at the null device (its reader went away)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
