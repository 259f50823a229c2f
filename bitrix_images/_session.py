"""
The only module that talks to the network: throttle, send, decode, retry or refresh.

Everything it decides is delegated to pure code: ``_protocol`` decodes and classifies,
``_retry`` computes delays, ``_throttle`` says how long to wait. This module sleeps,
sends and counts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO, Final, NoReturn

import aiohttp
import attrs
from yarl import URL

from . import _protocol
from ._auth import OAuthAuth, WebhookAuth
from ._protocol import BatchResult, Envelope, Retry, TimeInfo
from ._retry import RetryPolicy, backoff_delay
from ._throttle import RESET_GRAIN, LeakyBucket, OperatingBudget, RateLimit, Reservation
from .exceptions import (
    AuthError,
    BitrixError,
    OutcomeUnknown,
    PortalMoved,
    RateLimited,
    TransportError,
)

__all__ = ["ClientStats", "Session"]

log = logging.getLogger("bitrix_images")

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024
_INLINE_COMMIT: Final = 1024 * 1024  # bytes a non-durable download may commit on the loop
# general-principles.md, "Request Headers": a named User-Agent; downloads fail without one.
_USER_AGENT: Final = "bitrix_images/0.1 (+aiohttp)"
# Refusals the portal answers before processing a request: they cost no operating time.
_REFUSALS: Final = frozenset({Retry.BACKOFF, Retry.WAIT_RESET})


@attrs.define
class ClientStats:
    """What a client has done so far: requests, retries and the time spent waiting."""

    requests: int = 0
    retries: int = 0
    refreshes: int = 0
    throttle_wait: float = 0.0  # seconds spent waiting on the client-side limits
    retry_wait: float = 0.0  # seconds spent in backoff or waiting out OPERATION_TIME_LIMIT


class _NotSent(TransportError):
    """The connection failed before the request left: safe to retry any method."""


class Session:
    """
    One pooled ``aiohttp.ClientSession`` (owned or borrowed) and the call loop around it.

    Args:
        auth: where calls go and what they carry.
        rate_limit: the client-side limits.
        retry: how refused or failed calls are retried.
        session: a session to borrow (never closed here), or ``None`` to own one.
        timeout: seconds one request may take (limits.md: the portal stops at 60).
    """

    def __init__(
        self,
        auth: WebhookAuth | OAuthAuth,
        *,
        rate_limit: RateLimit,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None,
        timeout: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.auth = auth
        self.rate_limit = rate_limit
        self.retry = retry
        self.stats = ClientStats()
        self._borrowed = session
        self._owned: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._bucket = LeakyBucket(rate_limit.rate, rate_limit.burst)
        self._budget = OperatingBudget(
            rate_limit.operating_limit, rate_limit.operating_headroom, rate_limit.operating_window
        )
        self._in_flight = asyncio.Semaphore(rate_limit.max_in_flight)
        self._settled_future: asyncio.Future[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._refreshing: asyncio.Future[None] | None = None
        self._sleep = sleep
        self._closed = False

    # --- lifetime ------------------------------------------------------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use when none was lent."""
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._borrowed is not None:
            return self._borrowed
        if self._owned is None:
            self._owned = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.rate_limit.max_in_flight * 2),
                headers={"User-Agent": _USER_AGENT},
            )
        return self._owned

    async def close(self) -> None:
        """Close the session if it is ours; a borrowed one stays open."""
        self._closed = True
        if self._owned is not None:
            await self._owned.close()
            self._owned = None

    # --- calls ---------------------------------------------------------------------------

    async def call(
        self, method: str, params: Mapping[str, object], *, idempotent: bool | None = None
    ) -> Envelope:
        """Call *method* with throttling, retries and token refresh; return its envelope."""
        if idempotent is None:
            idempotent = _protocol.is_idempotent(method)
        envelope, reservation = await self._call(method, params, idempotent, {method: 1})
        self._settle(reservation, {method: envelope.time}, spent=True)
        return envelope

    async def _call(
        self,
        method: str,
        params: Mapping[str, object],
        idempotent: bool,
        spends: Mapping[str, float],
    ) -> tuple[Envelope, Reservation]:
        """
        The call loop; returns the envelope with the operating time it reserved, which the
        caller settles. *spends* is the work per method whose operating time it may cost.
        """
        attempt = 0
        waited = 0.0
        refreshed = False
        probe = False
        while True:
            attempt += 1
            reservation = await self._pace(spends, probe=probe)
            token = self.auth.tokens.access_token if isinstance(self.auth, OAuthAuth) else None
            try:
                envelope = await self._exchange(method, params, idempotent=idempotent)
            except BitrixError as error:
                kind = _protocol.retry_kind(error)
                # A refusal was not processed; any other error may have cost time.
                self._settle(reservation, {}, spent=kind not in _REFUSALS)
                if kind is Retry.REFRESH and isinstance(self.auth, OAuthAuth) and not refreshed:
                    await self._refresh(self.auth, token)
                    refreshed = True
                    continue
                waited += await self._pause_or_raise(
                    error, attempt, waited, idempotent=idempotent, methods=spends, label=method
                )
                # Refused for operating time, it has waited for the reset: it is the probe.
                probe = kind is Retry.WAIT_RESET
                continue
            except BaseException:
                self._settle(reservation, {}, spent=True)  # cancelled: maybe processed
                raise
            return envelope, reservation

    async def batch(
        self, commands: Mapping[str, _protocol.Command], *, halt: bool = False
    ) -> BatchResult:
        """
        Send one ``batch`` request; return its per-command parts.

        The request is idempotent when every command is, so a lost answer is resent.
        Operating time is booked where the portal reports it, since portals disagree on who
        pays (limits.md: each command, under its method; b24jssdk PR #539: the ``batch``
        method, for the whole request): the envelope's ``time`` under ``batch``, each
        method's last ``result_time`` under that method. The work is reserved under both.
        """
        methods = {key: method for key, (method, _) in commands.items()}
        spends: dict[str, float] = {"batch": len(commands)}
        for method in methods.values():
            spends[method] = spends.get(method, 0) + 1
        envelope, reservation = await self._call(
            "batch",
            _protocol.encode_batch(commands, halt=halt),
            all(_protocol.is_idempotent(m) for m in methods.values()),
            spends,
        )
        try:
            result = _protocol.decode_batch(envelope.result, methods=methods)
        except BaseException:
            self._settle(reservation, {"batch": envelope.time}, spent=True)
            raise
        reports = {**result.times, "batch": envelope.time}
        self._settle(reservation, reports, spent=True)
        return result

    def command_delay(
        self, error: BitrixError, attempt: int, method: str, waited: float
    ) -> float | None:
        """
        The wait before resending a failed batch command of a read *method*, or ``None``.

        The same rules as for whole calls: load refusals back off, OPERATION_TIME_LIMIT
        waits for the reset, transient failures retry, anything else is final; and the
        command's attempts and its *waited* seconds stay within the policy.
        """
        return self._next_delay(error, attempt, waited, idempotent=True, methods=(method,))

    def _next_delay(
        self,
        error: BitrixError,
        attempt: int,
        waited: float,
        *,
        idempotent: bool,
        methods: Iterable[str],
    ) -> float | None:
        """The wait before the next attempt, counted as a retry; ``None`` when none is allowed."""
        if attempt >= self.retry.max_attempts:
            return None
        delay = self._retry_delay(error, _protocol.retry_kind(error), attempt, idempotent, methods)
        if delay is None or waited + delay > self.retry.max_wait:
            return None
        self.stats.retries += 1
        self.stats.retry_wait += delay
        return delay

    async def _pause_or_raise(
        self,
        error: BitrixError,
        attempt: int,
        waited: float,
        *,
        idempotent: bool,
        methods: Iterable[str],
        label: str,
    ) -> float:
        """Sleep before the next attempt and return the seconds slept, or raise the final error."""
        delay = self._next_delay(error, attempt, waited, idempotent=idempotent, methods=methods)
        if delay is None:
            kind = _protocol.retry_kind(error)
            raise self._final(error, kind, attempt, idempotent=idempotent) from None
        log.debug("%s: %s, retry %d in %.3fs", label, _code_text(error), attempt, delay)
        await self._sleep(delay)
        return delay

    def operating_reset_at(self, method: str) -> float | None:
        """When the portal's operating window for *method* moves on, if it said."""
        return self._budget.reset_at(method)

    async def sleep(self, seconds: float) -> None:
        """Sleep with the session's clock (tests may inject their own)."""
        await self._sleep(seconds)

    # --- the steps -----------------------------------------------------------------------

    @property
    def _settled(self) -> asyncio.Future[None]:
        """Done when the next request's operating time is settled."""
        if self._settled_future is None or self._settled_future.done():
            self._settled_future = asyncio.get_running_loop().create_future()
        return self._settled_future

    def _settle(
        self, reservation: Reservation, reports: Mapping[str, TimeInfo | None], *, spent: bool
    ) -> None:
        """Settle a request's reservation and wake whoever waits on the operating time."""
        self._budget.settle(reservation, reports, spent=spent)
        waiting, self._settled_future = self._settled_future, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def _pace(self, spends: Mapping[str, float], *, probe: bool = False) -> Reservation:
        """
        Wait until the operating-time budget and then the bucket let a request go. A *probe*
        (a retry that has waited out OPERATION_TIME_LIMIT) skips the budget's wait.
        """
        while True:
            operating, reservation = self._budget.reserve(spends, force=probe)
            if reservation is not None:
                break
            log.debug("%s: waiting %.3fs for the operating time", _names(spends), operating)
            # Wait for the window to move on, or for a request in flight to be answered,
            # which may free or teach what is needed.
            settled = self._settled
            started = time.monotonic()
            await asyncio.wait({settled}, timeout=None if math.isinf(operating) else operating)
            self.stats.throttle_wait += time.monotonic() - started
        delay = self._bucket.reserve()
        if delay > 0:
            log.debug("%s: waiting %.3fs for the rate limit", _names(spends), delay)
            self.stats.throttle_wait += delay
            try:
                await self._sleep(delay)
            except BaseException:
                self._settle(reservation, {}, spent=False)
                raise
        return reservation

    async def _exchange(
        self, method: str, params: Mapping[str, object], *, idempotent: bool
    ) -> Envelope:
        url = self.auth.endpoint(method)
        body = _protocol.dumps(self.auth.sign(params))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        status, data = await self._send("POST", url, method, idempotent, data=body, headers=headers)
        log.debug("%s: HTTP %d", method, status)
        return _protocol.decode(status, data, method=method)

    async def _send(
        self,
        verb: str,
        url: URL,
        method: str,
        idempotent: bool,
        **kwargs: object,
    ) -> tuple[int, bytes]:
        """One HTTP exchange: never follows redirects, wraps every network failure."""
        async with self._in_flight:
            self.stats.requests += 1
            try:
                async with self.http.request(
                    verb,
                    url,
                    allow_redirects=False,
                    timeout=self._timeout,
                    **kwargs,  # type: ignore[arg-type]  # data/headers, typed by the callers
                ) as response:
                    _check_redirect(response, method)
                    return response.status, await response.read()
            except aiohttp.ClientConnectorError as exc:
                raise _NotSent(
                    f"cannot connect to the portal: {exc.os_error}", method=method
                ) from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise _lost(exc, method, idempotent) from None

    async def _refresh(self, auth: OAuthAuth, used_token: str | None) -> None:
        """
        Refresh the access token once for everyone who saw *used_token* expire.

        The refresh runs as a task of its own, shielded from the callers: the OAuth server
        replaces the refresh token as soon as it answers, so a refresh abandoned half-way
        by a cancelled caller would lock the client out for good.
        """
        async with self._refresh_lock:
            if auth.tokens.access_token != used_token:
                return  # another call refreshed it while this one waited for the lock
            if auth.failed_token == used_token:
                raise AuthError(
                    "the access token expired and its refresh failed", method="oauth.token"
                )
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.ensure_future(self._run_refresh(auth, used_token))
                self._refreshing.add_done_callback(_retrieve)
            refreshing = self._refreshing
        await asyncio.shield(refreshing)

    async def _run_refresh(self, auth: OAuthAuth, used_token: str | None) -> None:
        log.debug("refreshing the OAuth access token")
        try:
            status, body = await self._send(
                "POST", auth.oauth_url, "oauth.token", True, data=auth.refresh_form()
            )
            tokens = auth.accept(status, body)
        except BitrixError as error:
            auth.failed_token = used_token
            if isinstance(error, AuthError):
                raise
            raise AuthError(
                f"the token refresh failed: {error.description}",
                code=error.code,
                status=error.status,
                method="oauth.token",
            ) from None
        self.stats.refreshes += 1
        if auth.on_token_refresh is not None:
            await auth.on_token_refresh(tokens)

    def _retry_delay(
        self,
        error: BitrixError,
        kind: Retry,
        attempt: int,
        idempotent: bool,
        methods: Iterable[str],
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when it must not be made."""
        if kind is Retry.BACKOFF:
            # The portal refused before processing (limits.md): safe for every method.
            self._bucket.penalize()
            return backoff_delay(self.retry, attempt)
        if kind is Retry.WAIT_RESET:
            # limits.md: the method is blocked until its window moves on; hold its other
            # requests too, and retry after operating_reset_at.
            for method in methods:
                self._budget.refused(method)
            resets = [r for m in methods if (r := self._budget.reset_at(m)) is not None]
            if not resets:
                return self.retry.max_delay
            return max(max(resets) + RESET_GRAIN - time.time(), RESET_GRAIN)
        if kind is Retry.TRANSIENT and (idempotent or isinstance(error, _NotSent)):
            return backoff_delay(self.retry, attempt)
        return None

    def _final(
        self, error: BitrixError, kind: Retry, attempt: int, *, idempotent: bool
    ) -> BitrixError:
        """The exception to raise once no further attempt is allowed."""
        error.attempts = attempt
        if (
            kind is Retry.TRANSIENT
            and not idempotent
            and isinstance(error, TransportError)
            and not isinstance(error, (OutcomeUnknown, _NotSent))
        ):
            # An unreadable answer (an HTML 502 page, truncated JSON) to a write: the portal
            # may have applied it.
            return OutcomeUnknown(
                f"{error.description}; the portal may have applied the call, so it was not "
                "replayed",
                status=error.status,
                method=error.method,
                attempts=attempt,
            )
        if isinstance(error, _NotSent):
            return TransportError(
                error.description, status=error.status, method=error.method, attempts=attempt
            )
        if kind in (Retry.BACKOFF, Retry.WAIT_RESET) and not isinstance(error, RateLimited):
            return RateLimited(
                error.description,
                code=error.code,
                status=error.status,
                method=error.method,
                attempts=attempt,
            )
        return error

    # --- downloads -----------------------------------------------------------------------

    async def download(self, url: URL, part: Path, target: Path, *, durable: bool) -> int:
        """
        GET a signed download URL; the bytes end up at *target*, through *part*.

        A download is a REST call (``download``, rest_util.php) so it is paced by the same
        bucket, and it is a read, so lost answers are retried. The file appears at *target*
        only when complete (and, if *durable*, synced to disk). Returns the bytes written.
        """
        attempt = 0
        waited = 0.0
        probe = False
        while True:
            attempt += 1
            reservation = await self._pace({"download": 1}, probe=probe)
            try:
                body = await self._fetch(url, part)
            except BitrixError as error:
                kind = _protocol.retry_kind(error)
                self._settle(reservation, {}, spent=kind not in _REFUSALS)
                waited += await self._pause_or_raise(
                    error, attempt, waited, idempotent=True, methods=("download",), label="download"
                )
                probe = kind is Retry.WAIT_RESET
                continue
            except BaseException:
                self._settle(reservation, {}, spent=True)
                raise
            # A file carries no time block: the request is booked at what it reserved.
            self._settle(reservation, {}, spent=True)
            if not durable and body.size <= _INLINE_COMMIT:
                # Writing a small file to the page cache and renaming it takes about as
                # long as handing it to a thread (measured: the hop cost 0.4 ms of CPU a
                # file, twice the write), so it is done here, as aiohttp users do.
                return body.commit(part, target, durable)
            # An fsync waits on the disk's journal (half a millisecond and more, measured,
            # while other downloads sync), and so do the open and rename beside it: one
            # thread does all of them, so they stall neither the loop nor other downloads.
            committing = asyncio.ensure_future(
                asyncio.to_thread(body.commit, part, target, durable)
            )
            try:
                return await asyncio.shield(committing)
            except asyncio.CancelledError:
                # The thread cannot be stopped: let it finish, so that nothing is written
                # after the caller has been told the download was cancelled.
                await asyncio.wait({committing})
                raise

    async def _fetch(self, url: URL, part: Path) -> _Body:
        async with self._in_flight:
            self.stats.requests += 1
            body = _Body()
            try:
                async with self.http.get(
                    url,
                    allow_redirects=False,
                    timeout=self._timeout,
                    headers={"Accept": "*/*", "Referer": str(self.auth.origin) + "/"},
                ) as response:
                    _check_redirect(response, "download")
                    if response.status != 200:
                        _refused(response.status, await response.read())
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        if body.add(chunk):
                            await asyncio.to_thread(body.spill, part)
                    return body
            except aiohttp.ClientConnectorError as exc:
                body.discard()
                raise _NotSent(
                    f"cannot connect to the portal: {exc.os_error}", method="download"
                ) from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                body.discard()
                raise _lost(exc, "download", True) from None
            except BaseException:
                body.discard()
                raise


class _Body:
    """
    A download's bytes: in memory up to ``SPOOL`` bytes, then in the temporary file.

    Most product images are far smaller than the limit, so their file is created, written,
    synced and renamed in one go; a large one goes to disk as it arrives.
    """

    SPOOL: Final = 4 * 1024 * 1024

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.spilled: BinaryIO | None = None

    def add(self, chunk: bytes) -> bool:
        """Keep *chunk*; true when the bytes in memory should move to the file."""
        self.size += len(chunk)
        self.chunks.append(chunk)
        return self.size > self.SPOOL

    def spill(self, part: Path) -> None:
        """Append the bytes in memory to *part* (runs in a thread)."""
        if self.spilled is None:
            self.spilled = part.open("wb")
        self.spilled.writelines(self.chunks)
        self.chunks.clear()

    def discard(self) -> None:
        """Let go of a failed attempt's bytes; the caller removes *part*."""
        if self.spilled is not None:
            self.spilled.close()
        self.chunks.clear()

    def commit(self, part: Path, target: Path, durable: bool) -> int:
        """Write what is left, fsync if *durable*, rename *part* to *target* (in a thread)."""
        try:
            with self.spilled if self.spilled is not None else part.open("wb") as out:
                out.writelines(self.chunks)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            part.replace(target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            self.chunks.clear()
        return self.size


def _retrieve(task: asyncio.Future[None]) -> None:
    # The refresh's own outcome reaches its callers through the shield; this only keeps
    # asyncio from logging "exception was never retrieved" when every caller is gone.
    if not task.cancelled():
        task.exception()


def _refused(status: int, body: bytes) -> NoReturn:
    """Raise for a download answered with something other than the file."""
    _protocol.decode(status, body, method="download")  # raises when the body is an error
    raise TransportError("the portal did not send the file", status=status, method="download")


def _check_redirect(response: aiohttp.ClientResponse, method: str) -> None:
    # change-domen.md: a moved portal answers 302 with the new address. We never follow it
    # with credentials; the error names the new host only (the path holds the webhook code).
    if response.status in _REDIRECTS:
        location = response.headers.get("Location", "")
        host = URL(location).host if location else None
        raise PortalMoved(
            f"the portal moved to {host or 'an unknown address'}; update the portal URL",
            new_host=host,
            status=response.status,
            method=method,
        )


def _lost(exc: BaseException, method: str, idempotent: bool) -> TransportError:
    """The request may have reached the portal, but no usable answer came back."""
    what = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
    if idempotent:
        return TransportError(f"the request failed: {what}", method=method)
    return OutcomeUnknown(
        f"the answer was lost ({what}) after the request was sent; the portal may have "
        "applied it, so it was not replayed",
        method=method,
    )


def _names(spends: Mapping[str, float]) -> str:
    return "/".join(sorted(spends))


def _code_text(error: BitrixError) -> str:
    if error.code is not None:
        return f"error {error.code!r}"
    return type(error).__name__ if error.status is None else f"HTTP {error.status}"
