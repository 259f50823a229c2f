"""
Limits and OAuth tokens shared between processes and hosts through Redis.

``RedisCoordinator`` is the public face (``bx.RedisCoordinator``); ``SharedLimits`` and
``SharedTokens`` are what a client's session uses when it is given one. The key layout is
described in ``_keys``. Nothing here imports redis until a coordinator is built.
"""

from ._keys import Keys, fingerprint, oauth_credential, webhook_credential
from ._limits import SharedLimits
from ._redis import Link, Pacing, RedisCoordinator, RedisDown
from ._tokens import SharedTokens

__all__ = [
    "Keys",
    "Link",
    "Pacing",
    "RedisCoordinator",
    "RedisDown",
    "SharedLimits",
    "SharedTokens",
    "fingerprint",
    "oauth_credential",
    "webhook_credential",
]
