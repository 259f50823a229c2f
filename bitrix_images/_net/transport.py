"""
The aiohttp transport: the only module that uses aiohttp's client API.

It owns (or borrows) the pooled ``aiohttp.ClientSession``, bounds the requests on the wire,
never follows a redirect, and maps every aiohttp failure to our exceptions in one place
(``_mapped``). It neither retries nor sleeps: ``_calls.caller`` decides what follows a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Final, NoReturn

import aiohttp
import attrs
from yarl import URL

from .._wire import clock
from .._wire import protocol as _protocol
from .._wire.stats import ClientStats
from ..exceptions import MalformedResponse, NotSent, OutcomeUnknown, PortalMoved, TransportError
from .files import Spool

__all__ = ["Reach", "Transport"]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024
# The most of a download's error body read to learn what the error is.
_ERROR_BODY: Final = 64 * 1024
# general-principles.md, "Request Headers": a named User-Agent; downloads fail without one.
_USER_AGENT: Final = "bitrix_images/0.1 (+aiohttp)"


@attrs.frozen
class Reach:
    """How a portal's origin was reached (``Transport.reach``).

    ``addresses``: how many addresses its name resolved to; ``resolve``: the seconds DNS
    took; ``status``: the HTTP status of the answer (any status: the server answered);
    ``answer``: the seconds from sending the request to its answer's headers (TCP and TLS
    included when a new connection was made).
    """

    addresses: int
    resolve: float
    status: int
    answer: float
    tls: bool


class Transport:
    """
    One pooled ``aiohttp.ClientSession`` (owned or borrowed) and the requests made on it.

    Args:
        session: a session to borrow (never closed here), or ``None`` to own one.
        max_in_flight: requests on the wire at once at the most.
        timeout: seconds one request may take (limits.md: the portal stops at 60).
        stats: where requests and requests in flight are counted.
        max_answer_bytes: the largest answer read into memory; a larger one is refused
            (``MalformedResponse``) without being read further.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None,
        max_in_flight: int,
        timeout: float,
        stats: ClientStats,
        max_answer_bytes: int = _protocol.MAX_ANSWER_BYTES,
    ) -> None:
        self.stats = stats
        self.max_answer_bytes = max_answer_bytes
        self._borrowed = session
        self._owned: aiohttp.ClientSession | None = None
        self._pool_size = max_in_flight * 2
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use when none was lent."""
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._borrowed is not None:
            return self._borrowed
        if self._owned is None:
            self._owned = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                headers={"User-Agent": _USER_AGENT},
            )
        return self._owned

    async def close(self) -> None:
        """Close the session if it is ours; a borrowed one stays open."""
        self._closed = True
        if self._owned is not None:
            await self._owned.close()
            self._owned = None

    async def post(
        self,
        url: URL,
        method: str,
        *,
        idempotent: bool,
        data: bytes | Mapping[str, str],
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """POST *data*; return the status and the whole body (at most ``max_answer_bytes``)."""
        async with self._request(
            "POST", url, method, idempotent=idempotent, data=data, headers=headers
        ) as response:
            body = await _read(response, self.max_answer_bytes, method)
            return response.status, body

    async def fetch(self, url: URL, spool: Spool, *, headers: Mapping[str, str]) -> None:
        """GET a file into *spool* (a ``download``, a read); *spool* is discarded on failure."""
        try:
            async with self._request(
                "GET", url, "download", idempotent=True, data=None, headers=headers
            ) as response:
                if response.status != 200:
                    _refused(response.status, await _error_body(response))
                if _sized_within(response, spool.SPOOL):
                    # A product image, small and of a known size: read whole, one call
                    # instead of an iterator over its chunks (aiohttp stops at the length).
                    spool.add(await response.read())
                    return
                async for chunk in response.content.iter_chunked(_CHUNK):
                    if spool.add(chunk):
                        await asyncio.to_thread(spool.spill)
        except BaseException:
            spool.discard()
            raise

    async def reach(self, url: URL, *, timeout: float) -> Reach:
        """
        Resolve *url*'s host and send it one ``HEAD`` request, within *timeout* seconds each.

        Nothing is retried: a portal check must learn quickly that a host is dead, not wait
        out the retry policy. Each failure names its stage (``NotSent`` with ``DNS:``,
        ``TCP:`` or ``TLS:``, a certificate refusal named as such); any HTTP answer, an
        error status included, means the portal was reached.
        """
        host, port = url.host or "", url.port or 443
        started = clock.monotonic()
        try:
            found = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                timeout,
            )
        except socket.gaierror as exc:
            raise NotSent(
                f"DNS: cannot resolve {host} ({exc.strerror})", method="connect"
            ) from None
        except asyncio.TimeoutError:
            raise NotSent(
                f"DNS: no answer for {host} within {timeout:g} s", method="connect"
            ) from None
        resolved = clock.monotonic()
        self.stats.requests += 1
        try:
            async with self.session.head(
                url,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise NotSent(_unreached(exc, timeout), method="connect") from None
        return Reach(
            addresses=len({entry[4] for entry in found}),
            resolve=resolved - started,
            status=status,
            answer=clock.monotonic() - resolved,
            tls=url.scheme == "https",
        )

    @contextlib.asynccontextmanager
    async def _request(
        self,
        verb: str,
        url: URL,
        method: str,
        *,
        idempotent: bool,
        data: bytes | Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One HTTP exchange in a slot: never follows redirects, maps every network failure."""
        async with self._slots:
            stats = self.stats
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                async with self.session.request(
                    verb,
                    url,
                    data=data,
                    headers=headers,
                    allow_redirects=False,
                    timeout=self._timeout,
                ) as response:
                    _check_redirect(response, method)
                    yield response
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # from None: aiohttp's exceptions carry the request URL, and a webhook's URL
                # holds its secret code; the traceback must not show it.
                raise _mapped(exc, method, idempotent=idempotent) from None
            finally:
                stats.in_flight -= 1


def _unreached(exc: BaseException, timeout: float) -> str:
    """What stopped a portal check's request, by stage (``Transport.reach``)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", None) or str(error)
        return f"TLS: the portal's certificate was refused ({reason})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS: the handshake failed ({exc})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        return f"TCP: cannot connect to {exc.host}:{exc.port} ({error.strerror or error})"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {timeout:g} s"
    return f"the request failed ({type(exc).__name__})"


def _mapped(exc: BaseException, method: str, *, idempotent: bool) -> TransportError:
    """Our exception for an aiohttp failure (the only place that maps them)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The connection was never made, so the request never left: safe to resend.
        return NotSent(f"cannot connect to the portal: {exc.os_error}", method=method)
    what = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
    if idempotent:
        return TransportError(f"the request failed: {what}", method=method)
    return OutcomeUnknown(
        f"the answer was lost ({what}) after the request was sent; the portal may have "
        "applied it, so it was not replayed",
        method=method,
    )


async def _read(response: aiohttp.ClientResponse, limit: int, method: str) -> bytes:
    """
    The body of *response*, refused once it passes *limit* bytes.

    A ``Content-Length`` past the limit is refused before reading; a chunked answer (no
    length) is read until it passes the limit, so no more than *limit* bytes (plus one
    chunk) are ever held, whatever a hostile or broken portal sends.
    """
    status = response.status
    _protocol.check_answer_size(response.content_length, limit, method=method, status=status)
    if _sized_within(response, limit):
        return await response.read()  # one call: the whole answer, no more than its length
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        _protocol.check_answer_size(size, limit, method=method, status=status)
        chunks.append(chunk)
    return b"".join(chunks)


def _sized_within(response: aiohttp.ClientResponse, limit: int) -> bool:
    """
    Whether the body is at most *limit* bytes as aiohttp hands it over, known before reading.

    Only for a body sent as is: aiohttp inflates a ``Content-Encoding`` (gzip, deflate) on
    the fly, and a few KiB of gzip become gigabytes, so such a body is counted as it is read.
    """
    length = response.content_length
    if length is None or length > limit:
        return False
    return response.headers.get("Content-Encoding", "identity").strip().lower() == "identity"


async def _error_body(response: aiohttp.ClientResponse) -> bytes:
    """
    The body of a download answered with an error, when it is small enough to be one.

    A Bitrix error is a short JSON envelope (an nginx page a few hundred bytes); a body
    past ``_ERROR_BODY`` is not read at all, and the error is classified by its status.
    """
    try:
        return await _read(response, _ERROR_BODY, "download")
    except MalformedResponse:
        raise _protocol.classify(None, None, response.status, "download") from None


def _refused(status: int, body: bytes) -> NoReturn:
    """Raise for a download answered with something other than the file."""
    _protocol.decode(status, body, method="download")  # raises when the body is an error
    raise TransportError("the portal did not send the file", status=status, method="download")


def _check_redirect(response: aiohttp.ClientResponse, method: str) -> None:
    # change-domen.md: a moved portal answers 302 with the new address. We never follow it
    # with credentials; the error names the new host only (the path holds the webhook code).
    if response.status in _REDIRECTS:
        host = _host_of(response.headers.get("Location", ""))
        raise PortalMoved(
            f"the portal moved to {host or 'an unknown address'}; update the portal URL",
            new_host=host,
            status=response.status,
            method=method,
        )


def _host_of(location: str) -> str | None:
    """The host a redirect names, or ``None`` when it names none we can read."""
    if not location:
        return None
    try:
        url = URL(location)
        _ = url.port  # a port out of range is refused here, not later
    except ValueError:
        return None  # a malformed Location ("http://[::1", port 99999) names no host
    return url.host
