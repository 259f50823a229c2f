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
from ._coordinator import (
    RedisCoordinator,
    SharedLimits,
    SharedTokens,
    oauth_credential,
    webhook_credential,
)
from ._protocol import BatchResult, Envelope, Retry, TimeInfo
from ._retry import Attempts, RetryPolicy, Verdict
from ._stats import ClientStats
from ._throttle import LeakyBucket, OperatingBudget, RateLimit, Reservation
from ._transport import Transport
from .exceptions import AuthError, BitrixError, CoordinatorUnavailable
from .models import OAuthTokens

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
        max_answer_bytes: the largest answer read into memory (``Transport``).
        coordinator: shares the limits (and OAuth tokens) with other processes, or ``None``.

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
        max_answer_bytes: int = _protocol.MAX_ANSWER_BYTES,
        coordinator: RedisCoordinator | None = None,
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
            max_answer_bytes=max_answer_bytes,
        )
        self._bucket = LeakyBucket(rate_limit.rate, rate_limit.burst)
        self._budget = OperatingBudget(
            rate_limit.operating_limit, rate_limit.operating_headroom, rate_limit.operating_window
        )
        self._settled_future: asyncio.Future[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._refreshing: asyncio.Future[None] | None = None
        self.committer = Committer()
        # With a coordinator, the request bucket, the reported operating time and the OAuth
        # pair are shared through Redis (this process's own bucket is the fallback); the
        # operating-time reservations of this process stay in _budget as well.
        self._shared: SharedLimits | None = None
        self._shared_tokens: SharedTokens | None = None
        self._tickets: dict[int, str] = {}  # id(reservation) -> its reservation in Redis
        if coordinator is not None:
            if isinstance(auth, OAuthAuth):
                link = coordinator.link(auth.origin, oauth_credential(auth.client_id))
                self._shared_tokens = SharedTokens(link, auth.origin, lambda: auth.grantee)
            else:
                link = coordinator.link(auth.origin, webhook_credential(auth.secrets[0]))
            self._shared = SharedLimits(
                link, rate_limit, self._bucket, hold=timeout, stats=self.stats
            )
        self._tokens_lock = asyncio.Lock()
        self._tokens_loaded = self._shared_tokens is None

    async def close(self) -> None:
        """Close the transport's session if it is ours, and stop the committing thread.

        A token refresh in flight ends first.
        """
        refreshing = self._refreshing
        if refreshing is not None and not refreshing.done():
            # The OAuth server may have replaced the pair already: a refresh in flight (and
            # its on_token_refresh) finishes before the session goes, even when the caller
            # was cancelled (SIGINT, SIGTERM), or the new refresh token would be lost. One
            # still waiting for another process's lock has sent nothing: it ends at once.
            if self._shared_tokens is not None:
                self._shared_tokens.abandon(refreshing)
            await asyncio.wait({refreshing})
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
        await self._share(reservation, {method: envelope.time})
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
        expired: str | None = None  # the access token the portal refused, until refreshed
        await self._load_tokens()
        while True:
            attempts.begin()
            if expired is not None and isinstance(self.auth, OAuthAuth):
                try:
                    await self._refresh(self.auth, expired)
                except CoordinatorUnavailable as unavailable:
                    # No refresh without the coordinator's lock, and no request without a
                    # token: try the refresh again after a backoff, as a request not sent.
                    await self._pause_or_raise(attempts, unavailable, spends, label=method)
                    continue
                expired, refreshed = None, True
            reservation = await self._pace(spends, probe=probe)
            token = self.auth.tokens.access_token if isinstance(self.auth, OAuthAuth) else None
            try:
                envelope = await self._exchange(method, params, idempotent=idempotent)
            except BitrixError as error:
                kind = _protocol.retry_kind(error)
                # A refusal was not processed; any other error may have cost time.
                self._settle(reservation, {}, spent=kind not in _REFUSALS)
                await self._share(reservation, {})
                if kind is Retry.REFRESH and isinstance(self.auth, OAuthAuth) and not refreshed:
                    expired = token  # refreshed at the top of the next attempt
                    continue
                await self._pause_or_raise(attempts, error, spends, label=method)
                # Refused for operating time, it has waited for the reset: it is the probe.
                probe = kind is Retry.WAIT_RESET
                continue
            except BaseException:
                self._settle(reservation, {}, spent=True)  # cancelled: maybe processed
                self._tickets.pop(id(reservation), None)  # it expires in Redis by itself
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
            await self._share(reservation, {"batch": envelope.time})
            raise
        reports = {**result.times, "batch": envelope.time}
        self._settle(reservation, reports, spent=True)
        await self._share(reservation, reports)
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
            if self._shared is not None:
                self._shared.penalize()  # ours and, with the next round trip, everyone's
            else:
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
        if self._shared is not None:
            await self._shared.flush()  # the others should hold back during our backoff too
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
        try:
            if self._shared is not None:
                await self._pace_shared(spends, reservation)
            else:
                await self._wait_bucket(spends, self._bucket.reserve())
        except BaseException:
            self._settle(reservation, {}, spent=False)
            raise
        return reservation

    async def _wait_bucket(self, spends: Mapping[str, float], delay: float) -> None:
        if delay > 0:
            log.debug("%s: waiting %.3fs for the rate limit", _names(spends), delay)
            self.stats.throttle_wait += delay
            await self.wait(delay)

    async def _pace_shared(self, spends: Mapping[str, float], reservation: Reservation) -> None:
        """
        Book the request in the coordinator's bucket, after the operating time every
        process reported allows it; remember its reservation there for ``_share``.
        """
        assert self._shared is not None  # noqa: S101 -- called only with a coordinator
        while True:
            pacing = await self._shared.pace(spends)
            if pacing.reason == "bucket":
                break
            log.debug("%s: waiting %.3fs for the operating time", _names(spends), pacing.wait)
            self.stats.throttle_wait += pacing.wait
            await self.wait(pacing.wait)
        if pacing.ticket is not None:
            self._tickets[id(reservation)] = pacing.ticket
        await self._wait_bucket(spends, pacing.wait)

    async def _share(
        self, reservation: Reservation, reports: Mapping[str, TimeInfo | None]
    ) -> None:
        """Tell the coordinator what the portal reported, and drop the request's ticket."""
        if self._shared is not None:
            every = {**dict.fromkeys(reservation.costs), **reports}  # each method reserved
            await self._shared.settle(self._tickets.pop(id(reservation), None), every)

    async def _load_tokens(self) -> None:
        """Take the OAuth pair from the coordinator once (ours seeds it when it has none)."""
        if self._tokens_loaded:
            return
        async with self._tokens_lock:
            shared = self._shared_tokens
            if not self._tokens_loaded and shared is not None and isinstance(self.auth, OAuthAuth):
                self.auth.adopt(await shared.load(self.auth.tokens))
            self._tokens_loaded = True

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
        """Ask the OAuth server for a new pair; remember a refusal of *used_token*'s."""
        log.debug("refreshing the OAuth access token")
        try:
            status, body = await self.transport.post(
                auth.oauth_url, "oauth.token", idempotent=True, data=auth.refresh_form()
            )
            return auth.accept(status, body)
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
