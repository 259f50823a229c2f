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
import math
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Final, NoReturn

import aiohttp
from yarl import URL

from . import _files, _protocol
from ._auth import OAuthAuth, WebhookAuth
from ._committer import Committer
from ._protocol import BatchResult, Envelope, Retry, TimeInfo
from ._retry import Attempts, RetryPolicy, Verdict
from ._stats import ClientStats
from ._throttle import LeakyBucket, OperatingBudget, RateLimit, Reservation
from ._transport import Transport
from .exceptions import AuthError, BitrixError

__all__ = ["Caller", "InstantRetries", "instant_retries"]

log = logging.getLogger("bitrix_images")

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# Refusals the portal answers before processing a request: they cost no operating time.
_REFUSALS: Final = frozenset({Retry.BACKOFF, Retry.WAIT_RESET})


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
        self._budget = OperatingBudget(
            rate_limit.operating_limit, rate_limit.operating_headroom, rate_limit.operating_window
        )
        self._settled_future: asyncio.Future[None] | None = None
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
        attempts = self.attempts(idempotent=idempotent)
        refreshed = False
        probe = False
        while True:
            attempts.begin()
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
                await self._pause_or_raise(attempts, error, spends, label=method)
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
        Failed commands come back in ``errors``; resending them is the caller's, through
        ``attempts`` and ``judge`` like any call.
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
        self._settle(reservation, {**result.times, "batch": envelope.time}, spent=True)
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
        probe = False
        while True:
            attempts.begin()
            reservation = await self._pace({"download": 1}, probe=probe)
            spool = _files.Spool(part)
            try:
                await self.transport.fetch(url, spool, headers=headers)
            except BitrixError as error:
                kind = _protocol.retry_kind(error)
                self._settle(reservation, {}, spent=kind not in _REFUSALS)
                await self._pause_or_raise(attempts, error, ("download",), label="download")
                probe = kind is Retry.WAIT_RESET
                continue
            except BaseException:
                self._settle(reservation, {}, spent=True)
                raise
            # A file carries no time block: the request is booked at what it reserved.
            self._settle(reservation, {}, spent=True)
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
        methods = tuple(methods)
        resets = [r for m in methods if (r := self._budget.reset_at(m)) is not None]
        verdict = attempts.judge(error, reset_at=max(resets, default=None))
        if verdict.penalize:
            self._bucket.penalize()
        if _protocol.retry_kind(error) is Retry.WAIT_RESET:
            # limits.md: the method is blocked until its window moves on; hold its other
            # requests too (a command refused inside a batch included).
            for method in methods:
                self._budget.refused(method)
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
            if _INSTANT and not math.isinf(operating):
                # instant_retries(): the wait is recorded and taken as done.
                _INSTANT[-1].waits.append(operating)
                self.stats.throttle_wait += operating
                probe = True
                continue
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
                await self.wait(delay)
            except BaseException:
                self._settle(reservation, {}, spent=False)
                raise
        return reservation

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


def _names(spends: Mapping[str, float]) -> str:
    return "/".join(sorted(spends))


def _code_text(error: BitrixError) -> str:
    if error.code is not None:
        return f"error {error.code!r}"
    return type(error).__name__ if error.status is None else f"HTTP {error.status}"
