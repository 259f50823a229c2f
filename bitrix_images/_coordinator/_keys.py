"""
Where a credential's shared state lives in Redis: the key layout (pure, no I/O).

Every key of one portal + credential shares one hash tag (the part in braces), so a Redis
Cluster keeps them on one slot and one Lua script may touch them all::

    <namespace>:{<host[:port]>/<credential>}:bucket         string  the request bucket's TAT
    <namespace>:{<host[:port]>/<credential>}:op:<method>    hash    operating, reset_at, cost
    <namespace>:{<host[:port]>/<credential>}:held:<method>  zset    operating-time reservations
    <namespace>:{<host[:port]>/<credential>}:tokens         hash    the OAuth pair
    <namespace>:{<host[:port]>/<credential>}:lock           string  the token-refresh lock

``<credential>`` names the credential without a secret: ``webhook-<sha256 of the webhook
code, 16 hex digits>`` or ``oauth-<client_id>`` (an OAuth application's public id).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import attrs
from yarl import URL

__all__ = ["Keys", "oauth_credential", "webhook_credential"]

# Braces would break the hash tag and whitespace would make keys unreadable in redis-cli.
_UNSAFE: Final = re.compile(r"[{}\s]")


def webhook_credential(code: str) -> str:
    """A webhook's name in keys: a hash of its code, never the code."""
    return "webhook-" + hashlib.sha256(code.encode()).hexdigest()[:16]


def oauth_credential(client_id: str) -> str:
    """An OAuth application's name in keys: its ``client_id``, which is public."""
    return "oauth-" + _UNSAFE.sub("_", client_id)


def _portal(origin: URL) -> str:
    host = origin.host or "portal"
    return host if origin.is_default_port() else f"{host}:{origin.port}"


@attrs.frozen
class Keys:
    """The Redis keys of one portal + credential under *namespace*."""

    prefix: str

    @classmethod
    def of(cls, namespace: str, origin: URL, credential: str) -> Keys:
        """The keys of *credential* (see ``webhook_credential``) on the portal at *origin*."""
        tag = _UNSAFE.sub("_", f"{_portal(origin)}/{credential}")
        return cls(f"{namespace}:{{{tag}}}")

    @property
    def bucket(self) -> str:
        """The shared request bucket's theoretical arrival time (Redis clock, seconds)."""
        return f"{self.prefix}:bucket"

    def operating(self, method: str) -> str:
        """What the portal last reported of *method*'s operating time."""
        return f"{self.prefix}:op:{method.lower()}"

    def held(self, method: str) -> str:
        """The reservations of *method*'s operating time not yet settled."""
        return f"{self.prefix}:held:{method.lower()}"

    @property
    def tokens(self) -> str:
        """The OAuth pair."""
        return f"{self.prefix}:tokens"

    @property
    def lock(self) -> str:
        """The token-refresh lock."""
        return f"{self.prefix}:lock"
