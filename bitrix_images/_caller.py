"""
The orchestration of a call: auth, the client-side limits, retries and token refresh.

``Caller`` paces each attempt (``_pace``), sends it through the ``Transport``, and asks the
retry driver (``_retry.Attempts``) what follows a failure; the only sleeping is ``wait``.
What it decides is delegated to pure code: ``_protocol`` decodes and classifies, ``_retry``
judges failures, ``_throttle`` says how long to wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import NoReturn

import aiohttp
from yarl import URL

from . import _files, _protocol
from ._auth import OAuthAuth, WebhookAuth
from ._committer import Committer
from ._protocol import BatchResult, Envelope, Retry
from ._retry import Attempts, RetryPolicy, Verdict
from ._stats import ClientStats
from ._throttle import LeakyBucket, OperatingBudget, RateLimit
from ._transport import Transport
from .exceptions import AuthError, BitrixError

__all__ = ["Caller", "InstantRetries", "instant_retries"]

log = logging.getLogger("bitrix_images")

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class Caller:
    """
    Calls of one client: pace, send, decode, then retry, refresh or return.

    Args:
        auth: where calls go and what they carry.
        rate_limit: the client-side limits.
        retry: how refused or failed calls are retried.
        session: an ``aiohttp.ClientSession`` to borrow (never closed here), or ``None``.
        timeout: seconds one request may take (limits.md: the portal stops at 60).

    The leaky bucket (``_bucket``) and the operating-time budget (``_budget``) live here;
    every request, a batch's and a download's included, is paced by both in ``_pace``.
    """

    def __init__(
        self,
        auth: WebhookAuth | OAuthAuth,
        *,
        rate_limit: RateLimit,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> None:
        self.auth = auth
        self.rate_limit = rate_limit
        self.retry = retry
        self.stats = ClientStats()
        self.transport = Transport(
            session=session,
            max_in_flight=rate_limit.max_in_flight,
            timeout=timeout,
            stats=self.stats,
        )
        self._bucket = LeakyBucket(rate_limit.rate, rate_limit.burst)
        self._budget = OperatingBudget(rate_limit.operating_limit, rate_limit.operating_headroom)
        self._refresh_lock = asyncio.Lock()
        self._refreshing: asyncio.Future[None] | None = None
        self.committer = Committer()

    async def close(self) -> None:
        """Close the transport's session if it is ours, and stop the committing thread."""
        try:
            await self.transport.close()
        finally:
            await self.committer.close()

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
        spends = tuple(operating_methods) if operating_methods is not None else (method,)
        attempts = self.attempts(idempotent=idempotent)
        refreshed = False
        while True:
            attempts.begin()
            await self._pace(spends)
            token = self.auth.tokens.access_token if isinstance(self.auth, OAuthAuth) else None
            try:
                envelope = await self._exchange(method, params, idempotent=idempotent)
            except BitrixError as error:
                kind = _protocol.retry_kind(error)
                if kind is Retry.REFRESH and isinstance(self.auth, OAuthAuth) and not refreshed:
                    await self._refresh(self.auth, token)
                    refreshed = True
                    continue
                await self._pause_or_raise(attempts, error, spends, label=method)
                continue
            if operating_methods is None:
                # A batch's own time block is not its commands' (limits.md: the outer batch
                # is not counted); batch() books each command's result_time instead.
                self._budget.record(method, envelope.time)
            return envelope

    async def batch(
        self, commands: Mapping[str, _protocol.Command], *, halt: bool = False
    ) -> BatchResult:
        """
        Send one ``batch`` request; return its per-command parts.

        The request is idempotent when every command is, so a lost answer is resent.
        Per-command operating time (``result_time``) is booked under each command's method.
        Failed commands come back in ``errors``; resending them is the caller's, through
        ``attempts`` and ``judge`` like any call.
        """
        methods = {key: method for key, (method, _) in commands.items()}
        envelope = await self.call(
            "batch",
            _protocol.encode_batch(commands, halt=halt),
            idempotent=all(_protocol.is_idempotent(m) for m in methods.values()),
            operating_methods=set(methods.values()),
        )
        result = _protocol.decode_batch(envelope.result, methods=methods)
        for key, info in result.times.items():
            if key in methods:
                self._budget.record(methods[key], info)
        return result

    async def download(self, url: URL, part: str, target: str, *, durable: bool) -> int:
        """
        GET a signed download URL; the bytes end up at *target*, through *part*.

        A download is a REST call (``download``, rest_util.php) so it is paced by the same
        bucket, and it is a read, so lost answers are retried. The file appears at *target*
        only when complete (and, if *durable*, synced to disk). Returns the bytes written.
        """
        attempts = self.attempts(idempotent=True)
        headers = {"Accept": "*/*", "Referer": str(self.auth.origin) + "/"}
        while True:
            attempts.begin()
            await self._pace(("download",))
            spool = _files.Spool(part)
            try:
                await self.transport.fetch(url, spool, headers=headers)
            except BitrixError as error:
                await self._pause_or_raise(attempts, error, ("download",), label="download")
                continue
            return await self.committer.commit(spool, target, durable=durable)

    # --- retries -------------------------------------------------------------------------

    def attempts(self, *, idempotent: bool) -> Attempts:
        """A fresh retry driver under this client's policy (one per call or batch command)."""
        return Attempts(self.retry, idempotent=idempotent)

    def judge(self, attempts: Attempts, error: BitrixError, methods: Iterable[str]) -> Verdict:
        """
        The verdict on a failed attempt of a call spending *methods*, applied to the limits.

        This is the one place the bucket is penalised for QUERY_LIMIT_EXCEEDED (limits.md:
        the portal's counter is full), and where retries are counted.
        """
        resets = [r for m in methods if (r := self._budget.reset_at(m)) is not None]
        verdict = attempts.judge(error, reset_at=max(resets, default=None))
        if verdict.penalize:
            self._bucket.penalize()
        if verdict.delay is not None:
            self.stats.retries += 1
            self.stats.retry_wait += verdict.delay
        return verdict

    async def _pause_or_raise(
        self, attempts: Attempts, error: BitrixError, methods: Iterable[str], *, label: str
    ) -> None:
        """Sleep before the next attempt, or raise the final error."""
        verdict = self.judge(attempts, error, methods)
        if verdict.delay is None:
            _raise(verdict.error)
        log.debug(
            "%s: %s, retry %d in %.3fs", label, _code_text(error), attempts.attempt, verdict.delay
        )
        await self.wait(verdict.delay)

    async def wait(self, seconds: float) -> None:
        """Sleep *seconds*; instantly (recording the wait) inside ``instant_retries()``."""
        if _INSTANT:
            _INSTANT[-1].waits.append(seconds)
            seconds = 0.0
        await asyncio.sleep(seconds)

    # --- the steps -----------------------------------------------------------------------

    async def _pace(self, methods: Iterable[str]) -> None:
        operating = max((self._budget.delay(m) for m in methods), default=0.0)
        delay = max(operating, self._bucket.reserve())
        if delay > 0:
            why = "operating time" if operating >= delay else "rate limit"
            log.debug("%s: waiting %.3fs for the %s", "/".join(sorted(methods)), delay, why)
            self.stats.throttle_wait += delay
            await self.wait(delay)

    async def _exchange(
        self, method: str, params: Mapping[str, object], *, idempotent: bool
    ) -> Envelope:
        body = _protocol.dumps(self.auth.sign(params))
        status, data = await self.transport.post(
            self.auth.endpoint(method),
            method,
            idempotent=idempotent,
            data=body,
            headers=_JSON_HEADERS,
        )
        log.debug("%s: HTTP %d", method, status)
        return _protocol.decode(status, data, method=method)

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
            status, body = await self.transport.post(
                auth.oauth_url, "oauth.token", idempotent=True, data=auth.refresh_form()
            )
            tokens = auth.accept(status, body)
        except BitrixError as error:
            auth.failed_token = used_token
            if isinstance(error, AuthError):
                raise
            # from None: the cause may quote the OAuth server's answer, which holds tokens.
            raise AuthError(
                f"the token refresh failed: {error.description}",
                code=error.code,
                status=error.status,
                method="oauth.token",
            ) from None
        self.stats.refreshes += 1
        if auth.on_token_refresh is not None:
            await auth.on_token_refresh(tokens)


class InstantRetries:
    """
    While active, every wait of every client (backoff, operating-time resets, the
    client-side rate limit) returns at once; the seconds asked for are kept in ``waits``.

    Made by ``bitrix_images.testing.instant_retries()``; usable as ``with`` or ``async with``.
    """

    def __init__(self) -> None:
        self.waits: list[float] = []

    @property
    def total(self) -> float:
        """The seconds the clients would have waited."""
        return sum(self.waits)

    def __enter__(self) -> InstantRetries:
        _INSTANT.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _INSTANT.remove(self)

    async def __aenter__(self) -> InstantRetries:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


# The active instant_retries() blocks, innermost last (a process-wide switch, like
# stamina's set_testing(): the clients under test are usually built elsewhere).
_INSTANT: list[InstantRetries] = []


def instant_retries() -> InstantRetries:
    """
    Make every client's waits instant for your own tests, recording what they asked for.

        with bitrix_images.testing.instant_retries() as clock:
            await client.images.get(1, 2)      # retried at once after a 503
        assert clock.waits                      # the backoffs it would have slept

    The retry rules do not change (attempts and ``max_wait`` are counted as usual); only
    the sleeping is skipped.
    """
    return InstantRetries()


def _raise(error: BitrixError) -> NoReturn:
    # from None: the chained cause would be the aiohttp failure, whose text names the
    # request URL (and a webhook's URL holds its secret code).
    raise error from None


def _retrieve(task: asyncio.Future[None]) -> None:
    # The refresh's own outcome reaches its callers through the shield; this only keeps
    # asyncio from logging "exception was never retrieved" when every caller is gone.
    if not task.cancelled():
        task.exception()


def _code_text(error: BitrixError) -> str:
    if error.code is not None:
        return f"error {error.code!r}"
    return type(error).__name__ if error.status is None else f"HTTP {error.status}"
