"""
The only module that talks to the network: throttle, send, decode, retry or refresh.

Everything it decides is delegated to pure code: ``_protocol`` decodes and classifies,
``_retry`` computes delays, ``_throttle`` says how long to wait. This module sleeps,
sends and counts.
"""

from __future__ import annotations

import asyncio
import logging
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
from ._coordinator import (
    RedisCoordinator,
    SharedLimits,
    SharedTokens,
    merge_report,
    oauth_credential,
    webhook_credential,
)
from ._protocol import BatchResult, Envelope, Retry, TimeInfo
from ._retry import RetryPolicy, backoff_delay
from ._throttle import RESET_GRAIN, LeakyBucket, OperatingBudget, RateLimit
from .exceptions import (
    AuthError,
    BitrixError,
    CoordinatorUnavailable,
    OutcomeUnknown,
    PortalMoved,
    RateLimited,
    TransportError,
)
from .models import OAuthTokens

__all__ = ["ClientStats", "Session"]

log = logging.getLogger("bitrix_images")

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024
_INLINE_COMMIT: Final = 1024 * 1024  # bytes a non-durable download may commit on the loop
# general-principles.md, "Request Headers": a named User-Agent; downloads fail without one.
_USER_AGENT: Final = "bitrix_images/0.1 (+aiohttp)"


@attrs.define
class ClientStats:
    """What a client has done so far: requests, retries and the time spent waiting."""

    requests: int = 0
    retries: int = 0
    refreshes: int = 0
    throttle_wait: float = 0.0  # seconds spent waiting on the client-side limits
    retry_wait: float = 0.0  # seconds spent in backoff or waiting out OPERATION_TIME_LIMIT
    coordinator_fallbacks: int = 0  # requests paced on the client's own limits: Redis failed


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
        coordinator: shares the limits (and OAuth tokens) with other processes, or ``None``.
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
        coordinator: RedisCoordinator | None = None,
    ) -> None:
        self.auth = auth
        self.rate_limit = rate_limit
        self.retry = retry
        self.stats = ClientStats()
        self._borrowed = session
        self._owned: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._bucket = LeakyBucket(rate_limit.rate, rate_limit.burst)
        self._budget = OperatingBudget(rate_limit.operating_limit, rate_limit.operating_headroom)
        self._in_flight = asyncio.Semaphore(rate_limit.max_in_flight)
        self._refresh_lock = asyncio.Lock()
        self._refreshing: asyncio.Future[None] | None = None
        self._sleep = sleep
        self._closed = False
        self._shared: SharedLimits | None = None
        self._shared_tokens: SharedTokens | None = None
        if coordinator is not None:
            if isinstance(auth, OAuthAuth):
                link = coordinator.link(auth.origin, oauth_credential(auth.client_id))
                self._shared_tokens = SharedTokens(link, auth.origin)
            else:
                link = coordinator.link(auth.origin, webhook_credential(auth.secrets[0]))
            self._shared = SharedLimits(
                link, rate_limit, self._bucket, self._budget, hold=timeout, stats=self.stats
            )
        self._tokens_lock = asyncio.Lock()
        self._tokens_loaded = self._shared_tokens is None

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
        self,
        method: str,
        params: Mapping[str, object],
        *,
        idempotent: bool | None = None,
        operating_methods: Iterable[str] | None = None,
    ) -> Envelope:
        """
        Call *method* with throttling, retries and token refresh; return its envelope.

        *operating_methods* are the methods whose operating time this call spends (a batch
        spends its commands', not its own: limits.md).
        """
        if idempotent is None:
            idempotent = _protocol.is_idempotent(method)
        envelope, ticket = await self._call(method, params, idempotent, operating_methods)
        if operating_methods is None:
            # A batch's own time block is not its commands' (limits.md: the outer batch
            # is not counted); batch() books each command's result_time instead.
            await self._settle(ticket, {method: envelope.time})
        else:
            await self._settle(ticket, dict.fromkeys(operating_methods))
        return envelope

    async def _call(
        self,
        method: str,
        params: Mapping[str, object],
        idempotent: bool,
        operating_methods: Iterable[str] | None,
    ) -> tuple[Envelope, str | None]:
        """``call`` without the booking of operating time: the envelope and its ticket."""
        spends = tuple(operating_methods) if operating_methods is not None else (method,)
        attempt = 0
        waited = 0.0
        refreshed = False
        await self._load_tokens()
        while True:
            attempt += 1
            ticket = await self._pace(spends)
            token = self.auth.tokens.access_token if isinstance(self.auth, OAuthAuth) else None
            try:
                envelope = await self._exchange(method, params, idempotent=idempotent)
            except BitrixError as error:
                await self._settle(ticket, dict.fromkeys(spends))
                kind = _protocol.retry_kind(error)
                if kind is Retry.REFRESH and isinstance(self.auth, OAuthAuth) and not refreshed:
                    try:
                        await self._refresh(self.auth, token)
                    except CoordinatorUnavailable as unavailable:
                        # Nothing was sent: retry as a request that never left.
                        waited += await self._pause_or_raise(
                            unavailable,
                            attempt,
                            waited,
                            idempotent=True,
                            methods=spends,
                            label=method,
                        )
                        continue
                    refreshed = True
                    continue
                waited += await self._pause_or_raise(
                    error, attempt, waited, idempotent=idempotent, methods=spends, label=method
                )
                continue
            return envelope, ticket

    async def batch(
        self, commands: Mapping[str, _protocol.Command], *, halt: bool = False
    ) -> BatchResult:
        """
        Send one ``batch`` request; return its per-command parts.

        The request is idempotent when every command is, so a lost answer is resent.
        Per-command operating time (``result_time``) is booked under each command's method.
        """
        methods = {key: method for key, (method, _) in commands.items()}
        envelope, ticket = await self._call(
            "batch",
            _protocol.encode_batch(commands, halt=halt),
            all(_protocol.is_idempotent(m) for m in methods.values()),
            set(methods.values()),
        )
        try:
            result = _protocol.decode_batch(envelope.result, methods=methods)
        except BaseException:
            await self._settle(ticket, dict.fromkeys(methods.values()))
            raise
        reports: dict[str, TimeInfo | None] = dict.fromkeys(methods.values())
        for key, info in result.times.items():
            if key in methods:
                reports[methods[key]] = merge_report(reports[methods[key]], info)
        await self._settle(ticket, reports)
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
        if self._shared is not None:
            await self._shared.flush()  # the others should hold back during our backoff too
        await self._sleep(delay)
        return delay

    def operating_reset_at(self, method: str) -> float | None:
        """When the portal's operating window for *method* moves on, if it said."""
        return self._budget.reset_at(method)

    async def sleep(self, seconds: float) -> None:
        """Sleep with the session's clock (tests may inject their own)."""
        await self._sleep(seconds)

    # --- the steps -----------------------------------------------------------------------

    async def _pace(self, methods: Iterable[str]) -> str | None:
        """Wait for the limits; return the ticket of the operating time booked, if shared."""
        if self._shared is not None:
            while True:
                pacing = await self._shared.pace(methods)
                booked = pacing.reason == "bucket"
                why = "rate limit" if booked else "operating time"
                await self._throttle(methods, pacing.wait, why)
                if booked:
                    return pacing.ticket
        operating = max((self._budget.delay(m) for m in methods), default=0.0)
        delay = max(operating, self._bucket.reserve())
        await self._throttle(
            methods, delay, "operating time" if operating >= delay else "rate limit"
        )
        return None

    async def _throttle(self, methods: Iterable[str], delay: float, why: str) -> None:
        if delay > 0:
            log.debug("%s: waiting %.3fs for the %s", "/".join(sorted(methods)), delay, why)
            self.stats.throttle_wait += delay
            await self._sleep(delay)

    async def _settle(self, ticket: str | None, reports: Mapping[str, TimeInfo | None]) -> None:
        """Book what the portal said of each method's operating time; free the ticket."""
        if self._shared is not None:
            await self._shared.settle(ticket, reports)
            return
        for method, info in reports.items():
            self._budget.record(method, info)

    async def _load_tokens(self) -> None:
        """Take the OAuth pair from the coordinator once (ours seeds it when it has none)."""
        if self._tokens_loaded:
            return
        async with self._tokens_lock:
            shared = self._shared_tokens
            if not self._tokens_loaded and shared is not None and isinstance(self.auth, OAuthAuth):
                self.auth.adopt(await shared.load(self.auth.tokens))
            self._tokens_loaded = True

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
        if self._shared_tokens is None or used_token is None:
            tokens = await self._refresh_request(auth, used_token)
        else:

            async def run(newest: OAuthTokens) -> OAuthTokens:
                auth.adopt(newest)  # refresh the pair the other processes know as newest
                return await self._refresh_request(auth, used_token)

            # Under the coordinator's lock: one refresh across every process.
            tokens, refreshed = await self._shared_tokens.refresh(used_token, auth.tokens, run)
            auth.adopt(tokens)
            if not refreshed:
                log.debug("took the OAuth tokens another process refreshed")
                return
        self.stats.refreshes += 1
        if auth.on_token_refresh is not None:
            await auth.on_token_refresh(tokens)

    async def _refresh_request(self, auth: OAuthAuth, used_token: str | None) -> OAuthTokens:
        """Ask the OAuth server for a new pair; remember a refusal for *used_token*."""
        log.debug("refreshing the OAuth access token")
        try:
            status, body = await self._send(
                "POST", auth.oauth_url, "oauth.token", True, data=auth.refresh_form()
            )
            return auth.accept(status, body)
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
            if self._shared is not None:
                self._shared.penalize()
            else:
                self._bucket.penalize()
            return backoff_delay(self.retry, attempt)
        if kind is Retry.WAIT_RESET:
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
        while True:
            attempt += 1
            await self._pace(("download",))
            try:
                body = await self._fetch(url, part)
            except BitrixError as error:
                waited += await self._pause_or_raise(
                    error, attempt, waited, idempotent=True, methods=("download",), label="download"
                )
                continue
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


def _code_text(error: BitrixError) -> str:
    if error.code is not None:
        return f"error {error.code!r}"
    return type(error).__name__ if error.status is None else f"HTTP {error.status}"
