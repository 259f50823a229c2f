"""
Public file links over the network: a session of their own that never carries credentials.

REST requests go through ``transport``, whose session may carry a borrowed session's
cookies and whose URLs hold the webhook code. A ``detailUrl`` is fetched here instead, on a
separate session made on first use: no auth parameter, header or cookie (a
``DummyCookieJar`` keeps nothing a file host sets), redirects followed by hand (at most
``REDIRECTS``, each link checked again), and a resolver that refuses, at connection time,
any host other than the portal whose addresses are not all global (``LinkPolicy``). One
attempt is one GET; retrying is the caller's (``_calls.links``).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .._wire import public as _public
from .._wire.commands import IMAGE_HEAD
from .._wire.public import LinkPolicy, LinkRefused
from .files import Spool

__all__ = ["Failed", "PublicFetcher"]

_CHUNK: Final = 64 * 1024
_HEAD: Final = IMAGE_HEAD  # the bytes the image check reads (a header, not only its magic)
_USER_AGENT: Final = "bitrix_images/0.1 (+aiohttp)"


class Failed(Exception):
    """
    One public fetch that did not give the image: *reason* is the summary's word.

    *retryable* failures (5xx, 429, resets, timeouts) may be tried again, after *wait*
    seconds when the file host said how long (``Retry-After``).
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        wait: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retryable = retryable
        self.wait = wait
        self.attempts = 1


class _NotGlobal(OSError):
    """A host other than the portal resolved to a loopback, link-local or private address."""


class _GuardedResolver(AbstractResolver):
    """Resolves names, refusing a host other than the trusted one on a non-global address."""

    def __init__(self, policy: LinkPolicy, trusted: set[tuple[str, int]]) -> None:
        self._policy = policy
        self._trusted = trusted
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if (host.lower().rstrip("."), port) in self._trusted:
            return found
        # Every address, not only the first: a record with one global and one private
        # address must not let a retry land on the private one.
        if not found or not all(_public.address_allowed(r["host"], self._policy) for r in found):
            raise _NotGlobal(f"{host} resolves to a non-global address")
        return found

    async def close(self) -> None:
        await self._inner.close()


class PublicFetcher:
    """
    GETs of public links on a session of their own, at most *per_host* at once per host.

    *origin* is the portal's (trusted when ``policy.trust_portal``); *timeout* bounds one
    GET.
    """

    def __init__(self, origin: URL, policy: LinkPolicy, *, per_host: int, timeout: float):
        self.origin = origin
        self.policy = policy
        self.per_host = per_host
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _GuardedResolver | None = None
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._session is None:
            trusted: set[tuple[str, int]] = set()
            if self.policy.trust_portal and self.origin.host and self.origin.port:
                trusted.add((self.origin.host.lower().rstrip("."), self.origin.port))
            self._resolver = _GuardedResolver(self.policy, trusted)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit_per_host=self.per_host, resolver=self._resolver
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"},
                # No environment proxy or .netrc credentials either.
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            # A resolver passed in is not the connector's to close.
            await self._resolver.close()
            self._resolver = None

    async def fetch(self, url: URL, spool: Spool) -> None:
        """
        One attempt: GET *url* (and up to ``REDIRECTS`` redirects) into *spool*.

        Raises ``LinkRefused`` for a link the policy refuses, ``Failed`` for an answer
        that is not the complete image; *spool* is emptied on any failure.
        """
        try:
            await self._fetch(url, spool)
        except BaseException:
            spool.discard()
            raise

    async def _fetch(self, url: URL, spool: Spool) -> None:
        session = self._get_session()
        for _ in range(_public.REDIRECTS + 1):
            _public.check_link(url, self.origin, self.policy)
            try:
                async with session.get(
                    url, allow_redirects=False, timeout=self._timeout
                ) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        url = _redirect(url, response.headers.get("Location", ""))
                        continue
                    await _receive(response, spool, self.policy.max_file_bytes)
                    return
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _NotGlobal):
                    raise LinkRefused(str(exc.os_error)) from None
                raise Failed("no connection", retryable=True) from None
            except aiohttp.ClientPayloadError:
                raise Failed("cut short", retryable=True) from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                what = "timed out" if isinstance(exc, asyncio.TimeoutError) else "no answer"
                raise Failed(what, retryable=True) from None
        raise Failed("too many redirects")


def _redirect(url: URL, location: str) -> URL:
    if not location:
        raise Failed("redirect without a location")
    try:
        return url.join(URL(location))
    except ValueError:
        raise Failed("malformed redirect") from None


async def _receive(response: aiohttp.ClientResponse, spool: Spool, limit: int) -> None:
    """Read a file answer into *spool*, or raise ``Failed`` saying why it does not count."""
    status = response.status
    content_type = response.headers.get("Content-Type", "")
    if status != 200:
        wait = None
        if status in _public.BUSY:
            wait = _public.retry_after(response.headers.get("Retry-After"), 60.0)
        raise Failed(
            _public.reason_of_status(status),
            status=status,
            retryable=status in _public.RETRYABLE,
            wait=wait,
        )
    expected = response.content_length
    identity = response.headers.get("Content-Encoding", "identity").strip().lower() == "identity"
    if expected is not None and expected > limit:
        raise Failed("too large", status=status)
    head = b""
    async for chunk in response.content.iter_chunked(_CHUNK):
        if len(head) < _HEAD:
            head += chunk[: _HEAD - len(head)]
            verdict = _public.judge_answer(status, content_type, head, len(head), None)
            if verdict == "html" or (len(head) >= _HEAD and verdict is not None):
                raise Failed(verdict, status=status)
        if spool.add(chunk):
            await asyncio.to_thread(spool.spill)
        if spool.size > limit:
            raise Failed("too large", status=status)
    verdict = _public.judge_answer(
        status, content_type, head, spool.size, expected if identity else None
    )
    if verdict is not None:
        raise Failed(verdict, status=status)
