"""
Where shared state lives in Redis: the key layout (pure, no I/O).

Each key is scoped to what the portal scopes the thing it holds to (limits.md): the request
bucket to the portal, an operating-time budget to the portal + application (or webhook) +
method, an OAuth pair to one *grant*, one user's authorisation of the application. Every key
of one portal shares one hash tag (the part in braces), so a Redis Cluster keeps them on one
slot and one Lua script may touch them all::

    <ns>:{<host[:port]>}:bucket                                string  the request bucket's TAT
    <ns>:{<host[:port]>}:<credential>:op:<method>              hash    operating, reset_at, cost
    <ns>:{<host[:port]>}:<credential>:held:<method>            zset    operating-time reservations
    <ns>:{<host[:port]>}:<credential>:alias:<fingerprint>      string  the grant of a refresh token
    <ns>:{<host[:port]>}:<credential>:grant:<lineage>          hash    the pair, member_id,
                                                                       user_id, refused
    <ns>:{<host[:port]>}:<credential>:grant:<lineage>:lock     string  the token-refresh lock

``<credential>`` names the credential without a secret: ``webhook-<sha256 of the webhook
code, 16 hex digits>`` or ``oauth-<client_id>`` (an OAuth application's public id).

A grant is known by its *lineage*: the fingerprint (``fingerprint``: a sha256 prefix, never
the token) of the first refresh token a caller gave for it. Each refresh token the OAuth
server issues later is recorded as an alias of the same lineage, so a process given an
already-rotated token of the grant still finds its current pair, and a pair Redis has never
seen (another user's, or the application authorised again) starts a grant of its own.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import attrs
from yarl import URL

__all__ = ["Keys", "fingerprint", "oauth_credential", "webhook_credential"]

# Braces would break the hash tag and whitespace would make keys unreadable in redis-cli.
_UNSAFE: Final = re.compile(r"[{}\s]")


def webhook_credential(code: str) -> str:
    """A webhook's name in keys: a hash of its code, never the code."""
    return "webhook-" + hashlib.sha256(code.encode()).hexdigest()[:16]


def oauth_credential(client_id: str) -> str:
    """An OAuth application's name in keys: its ``client_id``, which is public."""
    return "oauth-" + _UNSAFE.sub("_", client_id)


def fingerprint(refresh_token: str) -> str:
    """A refresh token's name in keys: 24 hex digits of its sha256, never the token."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:24]


def _portal(origin: URL) -> str:
    host = origin.host or "portal"
    return host if origin.is_default_port() else f"{host}:{origin.port}"


@attrs.frozen
class Keys:
    """The Redis keys of one portal + credential under *namespace*."""

    portal: str  # <ns>:{<host>}
    prefix: str  # <ns>:{<host>}:<credential>

    @classmethod
    def of(cls, namespace: str, origin: URL, credential: str) -> Keys:
        """The keys of *credential* (see ``webhook_credential``) on the portal at *origin*."""
        portal = f"{namespace}:{{{_UNSAFE.sub('_', _portal(origin))}}}"
        return cls(portal, f"{portal}:{_UNSAFE.sub('_', credential)}")

    @property
    def bucket(self) -> str:
        """The portal's request bucket's theoretical arrival time (Redis clock, seconds)."""
        return f"{self.portal}:bucket"

    def operating(self, method: str) -> str:
        """What the portal last reported of *method*'s operating time."""
        return f"{self.prefix}:op:{method.lower()}"

    def held(self, method: str) -> str:
        """The reservations of *method*'s operating time not yet settled."""
        return f"{self.prefix}:held:{method.lower()}"

    def alias(self, print_: str) -> str:
        """The lineage of the grant whose refresh token has the fingerprint *print_*."""
        return f"{self.prefix}:alias:{print_}"

    def grant(self, lineage: str) -> str:
        """One grant's OAuth pair, the user it belongs to, and whether it was refused."""
        return f"{self.prefix}:grant:{lineage}"

    def lock(self, lineage: str) -> str:
        """One grant's token-refresh lock."""
        return f"{self.prefix}:grant:{lineage}:lock"
