"""
Public file links (``detailUrl``) as data: where one may point, what answer counts. Pure.

``detailUrl`` is CFile::GetFileSRC: a static file under ``/upload/`` on the portal's web
server, or on the cloud's storage host when the portal keeps its files there (protocol
notes §6, §10.1). It is fetched with no credentials, outside REST and its limits, so the
rules here decide two things before and after that request:

- ``check_link``: the portal's own origin is fetched at whatever address it has; any other
  host only over https, and (``address_allowed``, applied by the network layer when it
  connects and on every redirect) only when every address it resolves to is global, so
  that a hostile record cannot make the client probe the user's network.
- ``judge_answer``: an answer counts only when it is the complete image: 200, not an HTML
  page (a login or error page), the image's magic bytes, the full ``Content-Length``, at
  most ``max_file_bytes``. Anything else is a ``reason``, the word the summary counts.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Final

import attrs
from yarl import URL

from .commands import is_image, same_origin
from .validate import check_int

__all__ = [
    "BUSY",
    "CLOSED",
    "MAX_FILE_BYTES",
    "REDIRECTS",
    "RETRYABLE",
    "VIAS",
    "LinkPolicy",
    "LinkRefused",
    "address_allowed",
    "check_link",
    "judge_answer",
    "reason_of_status",
    "retry_after",
]

VIAS: Final = ("auto", "public", "rest")
# The largest file a download reads (a product image is far smaller; CFile's default
# upload limit is well under it).
MAX_FILE_BYTES: Final = 100 * 2**20
# At most this many redirects of a public link are followed, each checked again.
REDIRECTS: Final = 3
# The file host is busy: wait (Retry-After) and ask again; not a reason to fall back.
BUSY: Final = frozenset({429, 503})
# Transient answers of a web server: retried with backoff, as any read.
RETRYABLE: Final = frozenset({500, 502, 503, 504, 429})
# Reasons that say the links are closed to anonymous visitors (auto gives up after 3 in a row).
CLOSED: Final = frozenset({"401", "403", "html"})


class LinkRefused(ValueError):
    """A public link that points where the policy does not let the client go."""


@attrs.frozen
class LinkPolicy:
    """
    Where a ``detailUrl`` may point and how big a file may be.

    Args:
        trust_portal: the portal's own origin is fetched at whatever address it resolves
            to (the default). ``False`` checks it like any other host (a test of a
            "remote" portal on loopback).
        allow_private: hosts other than the portal's may resolve to loopback, link-local
            or private addresses (a test's storage origin on loopback); never in production.
        allow_http: hosts other than the portal's may be plain http (same use).
        max_file_bytes: the largest file accepted through a public link.
    """

    trust_portal: bool = True
    allow_private: bool = False
    allow_http: bool = False
    max_file_bytes: int = attrs.field(default=MAX_FILE_BYTES)

    @max_file_bytes.validator
    def _check_size(self, attribute: attrs.Attribute[int], value: int) -> None:
        check_int(attribute.name, value, minimum=1)


def check_link(url: URL, origin: URL, policy: LinkPolicy) -> bool:
    """
    Whether *url* may be fetched; ``True`` when it is the portal's own (trusted) origin.

    Raises ``LinkRefused`` for a relative link, a scheme other than http(s), plain http to
    another host, or an address literal that is not global. A host name is checked when
    it is resolved (``address_allowed``), not here.
    """
    if not url.is_absolute() or url.scheme not in ("http", "https") or not url.host:
        raise LinkRefused("the public link is not an http(s) URL")
    if policy.trust_portal and same_origin(url, origin):
        return True
    if url.scheme != "https" and not policy.allow_http:
        raise LinkRefused(f"the public link on {url.host} is not https")
    try:
        literal = ipaddress.ip_address(url.host.strip("[]"))
    except ValueError:
        return False  # a name: checked at connection time
    if not address_allowed(str(literal), policy):
        raise LinkRefused(f"the public link points at a non-global address ({literal})")
    return False


def address_allowed(address: str, policy: LinkPolicy) -> bool:
    """Whether a host other than the trusted portal may be reached at *address*."""
    if policy.allow_private:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global is false for loopback, link-local, private (RFC 1918, ULA), shared (CGNAT),
    # documentation and reserved ranges alike.
    return ip.is_global and not ip.is_multicast


def reason_of_status(status: int) -> str:
    """The reason word of an answer that is not a file (``"403"``, ``"404"``...)."""
    return str(status)


def judge_answer(
    status: int, content_type: str, head: bytes, size: int, expected: int | None
) -> str | None:
    """
    Why an answer is not the complete image, or ``None`` when it is.

    *head* is the start of the body (``IMAGE_HEAD`` bytes when it has them), *size* the bytes
    received, *expected* the ``Content-Length`` (``None``: a clean end without one, accepted
    when the image check passes).
    """
    if status != 200:
        return reason_of_status(status)
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml") or head.lstrip()[:1] == b"<":
        return "html"
    if expected is not None and size != expected:
        return "cut short"
    if not is_image(head):
        return "not an image"
    return None


def retry_after(value: str | None, cap: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds), capped; ``None`` if absent."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: the caller's own backoff decides
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)
