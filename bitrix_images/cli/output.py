"""
What the command line prints: JSON lines on standard output, and on standard error one
line per warning or error, made printable (``sync.terminal``) and scrubbed of secrets.

``mirror`` and ``upload`` add their summary as one JSON object (``job_json``), their
warnings through ``WarningLines`` (to standard error, and to the log), and ``JobLog``, the
``--log-file``: each file event and warning as a JSON line, the summary last.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Final

import attrs
from yarl import URL

from .._wire.text import plural
from ..models import ImageType, ProductImage
from ..sync.events import FileEvent
from ..sync.mirror_result import MirrorResult
from ..sync.progress import write_line
from ..sync.terminal import PROG, printable, warn
from ..sync.upload.run import UploadResult

__all__ = [
    "JobLog",
    "WarningLines",
    "emit",
    "error",
    "failure_json",
    "image_json",
    "job_json",
    "plural",
    "scrub",
    "silence_stdout",
    "snake_name",
    "warning",
]

_WARNING: Final = f"{PROG}: warning: "
# Of a result, what the JSON summary leaves out: the plan's lines (-v prints them), and the
# waits summed over concurrent requests (``held`` is the wall-clock figure).
_NOT_IN_JSON: Final = ("planned", "waited")

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


def failure_json(event: FileEvent) -> dict[str, object]:
    """One failure of a job's JSON summary: the product, the file and image, and why."""
    return {
        "product": event.product_id,
        "name": event.name,
        "image_id": event.image_id,
        "reason": event.reason,
    }


def job_json(
    command: str,
    result: MirrorResult | UploadResult | None,
    *,
    ended: str,
    error: str | None,
    extra: Mapping[str, object],
) -> dict[str, object]:
    """
    The JSON summary of a ``mirror`` or ``upload`` run: the *command*, how it *ended*
    (``done``, ``failed``, ``error``, ``interrupted``), the *error* that says why it did not
    end well, every count and total of *result* (none when it stopped before starting),
    and *extra* (``bytes``, ``failures``).
    """
    data: dict[str, object] = {"command": command, "ended": ended, "error": error}
    if result is not None:
        fields = attrs.asdict(result, recurse=False)
        data["dry_run"] = fields.pop("dry_run")
        for name in _NOT_IN_JSON:
            del fields[name]
        for name in ("seconds", "held"):
            fields[name] = round(fields[name], 3)
        if isinstance(result, MirrorResult):
            fields["fallbacks"] = dict(result.fallbacks)
        data.update(fields)
    for name, value in extra.items():
        data.setdefault(name, value)
    return data


class JobLog:
    """
    ``--log-file``: every file event and warning of a run appended to *path* as a JSON
    line with its time (UTC, ISO 8601), and the summary last (``"event": "end"``). Opened
    before the first request: a file that cannot be written is an error then.
    """

    def __init__(self, path: Path, *, dry_run: bool) -> None:
        try:
            # Line-buffered: each record is whole on disk once written (tail -f, a kill).
            self.file = path.open("a", encoding="utf-8", buffering=1)
        except OSError as error:
            raise ValueError(
                f"cannot write the log file {path}: {error.strerror or error}"
            ) from None
        self.dry_run = dry_run

    def write(self, record: Mapping[str, object]) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.file.write(json.dumps({"time": stamp, **record}, ensure_ascii=False) + "\n")

    def event(self, event: FileEvent) -> None:
        record = event.as_json()
        if self.dry_run:
            record["dry_run"] = True  # planned, not done
        self.write(record)

    def warning(self, text: str) -> None:
        self.write({"event": "warning", "message": text})

    def end(self, summary: Mapping[str, object]) -> None:
        self.write({"event": "end", **summary})

    def close(self) -> None:
        self.file.close()


class WarningLines(io.StringIO):
    """
    Where a job's warnings are written, one ``bitrix-images: warning:`` line at a time:
    each line goes on to *stream* (``None``: nowhere, ``-q``) and to *log*. Nothing is
    kept.
    """

    def __init__(self, stream: IO[str] | None, log: JobLog | None) -> None:
        super().__init__()
        self.stream = stream
        self.log = log
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, _, self.pending = self.pending.partition("\n")
            if self.log is not None:
                self.log.warning(line[len(_WARNING) :] if line.startswith(_WARNING) else line)
            if self.stream is not None:
                # Through the bar's lock: a bar on the terminal is cleared, then drawn again.
                write_line(line, self.stream)
        return len(text)
