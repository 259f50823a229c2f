"""
The command line's OAuth token file (``--token-file``): read it, check it, save it.

The OAuth server replaces the refresh token as soon as it answers a refresh
(settings/oauth/index.md, "refresh_token"), so a refreshed pair that is not stored is an
application that must be authorised again. Hence:

- ``check_writable`` before any request: a token file that cannot be written fails the
  command before the portal has rotated anything;
- ``write_tokens`` replaces the file atomically (a temporary file made 0600 by ``mkstemp``
  in the same directory, written, fsynced, renamed over the file, the directory fsynced): a
  crash leaves the old pair or the new one, never a truncated file, and no other user can
  read the file at any moment. A symlinked token file is written through to its target, so
  the link keeps working;
- ``save_tokens``: when the file cannot be written after all (the disk filled up since the
  check), the pair goes to a file of last resort beside it or in the home directory, and the
  caller tells the user where. Only when every place fails is the error raised.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

from ..models import OAuthTokens

__all__ = ["TokenFileError", "check_writable", "read_tokens", "save_tokens", "write_tokens"]

# The keys of the file, as the CLI's OAuth variables name them.
_KEYS: Final = {
    "access_token": "BITRIX_ACCESS_TOKEN",
    "refresh_token": "BITRIX_REFRESH_TOKEN",
    "client_endpoint": "BITRIX_CLIENT_ENDPOINT",
    "expires_at": "expires_at",
}


class TokenFileError(ValueError):
    """A token file that cannot be read or written (the message names the path, no secret)."""


def read_tokens(path: Path, *, writer: str = "bitrix-images") -> dict[str, str]:
    """The tokens of a file written by ``write_tokens``, keyed like the CLI's variables."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        values = {name: data[key] for key, name in _KEYS.items()}
    except (ValueError, TypeError, KeyError) as error:
        raise TokenFileError(f"{path} is not a token file written by {writer}") from error
    if not all(isinstance(value, str) for value in values.values()):
        raise TokenFileError(f"{path} is not a token file written by {writer}")
    return values


def _target(path: Path) -> Path:
    """The file a write replaces: the final target when *path* is a symlink (even dangling)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_writable(path: Path) -> None:
    """
    Raise ``TokenFileError`` unless ``write_tokens(path, ...)`` can succeed.

    Checked by doing what the write does (create a temporary file beside the target, then
    remove it), so that it holds for root, ACLs and read-only mounts alike.
    """
    target = _target(path)
    if target.is_dir():
        raise TokenFileError(f"cannot save OAuth tokens to {path}: it is a directory")
    folder = target.parent
    if not folder.is_dir():
        raise TokenFileError(f"cannot save OAuth tokens to {path}: no such directory {folder}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise TokenFileError(
            f"cannot save OAuth tokens to {path}: {error.strerror or error}"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _encode(tokens: OAuthTokens) -> bytes:
    data = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": tokens.expires_at.isoformat(),
        "client_endpoint": str(tokens.client_endpoint),
    }
    return json.dumps(data).encode()


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk (rename(2), fsync(2)).
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_tokens(path: Path, tokens: OAuthTokens, *, follow_symlinks: bool = True) -> Path:
    """
    Replace the token file atomically and durably, readable by its owner only.

    Returns the file written: *path*, or its target when *path* is a symlink and
    *follow_symlinks* is true (otherwise the link itself is replaced).
    """
    target = _target(path) if follow_symlinks else path
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp created it 0600, O_EXCL
            out.write(_encode(tokens))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _last_resorts(path: Path) -> list[Path]:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{path.name or 'tokens'}.{stamp}.rescued.json"
    places = [_target(path).parent / name, Path.home() / f".bitrix-images-{name}"]
    places.append(Path(tempfile.gettempdir()) / f"bitrix-images-{os.getuid()}-{name}")
    return places


def save_tokens(path: Path, tokens: OAuthTokens) -> tuple[Path, OSError | None]:
    """
    Write *tokens* to *path*, or else to a file of last resort.

    Returns the file written and, when it is not *path*, the error that prevented writing
    *path*, so that the caller can say where the pair went. Raises the first error only when
    no place at all could be written.
    """
    try:
        return write_tokens(path, tokens), None
    except OSError as error:
        first = error
    for place in _last_resorts(path):
        try:
            # A name in a shared directory may have been planted as a link: never follow it.
            return write_tokens(place, tokens, follow_symlinks=False), first
        except OSError:
            continue
    raise first
