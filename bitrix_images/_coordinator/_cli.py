"""
The command line's ``--redis``: a coordinator that is reachable at start, or a clear error;
its warnings written through the command line's own writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from ._redis import RedisCoordinator

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisUnusable", "connect", "warnings_to"]

# Short socket timeouts: a Redis that does not answer must not hold up the portal's work.
_SOCKET_TIMEOUT: Final = 1.0
# How long the check at start may take (connect, authenticate, PING).
_CHECK_TIMEOUT: Final = 5.0


class RedisUnusable(ValueError):
    """The ``--redis`` given is not a Redis URL, or its Redis cannot be reached at start."""


async def connect(url: str) -> RedisCoordinator:
    """
    A coordinator on a Redis client of its own at *url* (the caller closes
    ``coordinator.redis``), checked with a PING first.

    Raises:
        RedisUnusable: *url* is not a Redis URL, or that Redis did not answer. The message
            names its host and port, never the password.
        ValueError: redis-py is not installed.
    """
    try:
        from redis.asyncio import Redis  # noqa: PLC0415 -- the optional extra
        from redis.exceptions import RedisError  # noqa: PLC0415
    except ImportError:
        raise ValueError("--redis needs redis-py: pip install 'bitrix_images[redis]'") from None
    try:
        redis = Redis.from_url(
            url, socket_timeout=_SOCKET_TIMEOUT, socket_connect_timeout=_SOCKET_TIMEOUT
        )
    except ValueError:
        # from None: the parser's message may quote the URL, password and all.
        raise RedisUnusable(
            "--redis is not a Redis URL: redis://[:password@]host[:port][/db], rediss://... "
            "or unix:///path"
        ) from None
    answered = False
    try:
        await asyncio.wait_for(redis.ping(), _CHECK_TIMEOUT)
        answered = True
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        what = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
        raise RedisUnusable(
            f"cannot use the Redis at {_where(redis)} given by --redis ({what}); check "
            "the host, port and password, or leave out --redis to run uncoordinated"
        ) from None
    finally:
        if not answered:
            await redis.aclose()
    return RedisCoordinator(redis)


def _where(redis: Redis) -> str:
    """``host:port`` (or the socket's path) of *redis*: never its password."""
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


class _Writer(logging.Handler):
    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(record.getMessage())
        except Exception:  # logging's own rule: never raise from emit
            self.handleError(record)


@contextlib.contextmanager
def warnings_to(write: Callable[[str], None]) -> Iterator[None]:
    """While active, the coordinator's warnings go to *write* (one line each), not to logging."""
    logger = logging.getLogger("bitrix_images.coordinator")
    handler = _Writer(write)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
