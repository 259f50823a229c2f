"""
``AttemptLoop``: the one attempt loop of calls, batches and downloads.

Each attempt is paced (``Pacer``), sent, and on a failure judged by the pure retry rules
(``retry.Attempts``): sleep and go again, refresh the OAuth token and go again, or raise.
What a request is (a JSON call, a batch, a file's bytes) is the caller's ``send``; this
loop only knows how requests are retried.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final, NoReturn, TypeVar

from .._wire.limits import Reservation
from .._wire.protocol import Retry, retry_kind
from ..exceptions import BitrixError, CoordinatorUnavailable
from .pacer import Pacer
from .refresh import TokenRefresher
from .retry import Attempts, RetryPolicy, Verdict

__all__ = ["AttemptLoop"]

log = logging.getLogger("bitrix_images")

T = TypeVar("T")

# Refusals the portal answers before processing a request: they cost no operating time.
_REFUSALS: Final = frozenset({Retry.BACKOFF, Retry.WAIT_RESET})


class AttemptLoop:
    """
    Attempts of one client's requests, under its retry policy.

    Args:
        pacer: paces each attempt and learns from refusals.
        policy: the bounds on attempts and waiting.
        refresher: refreshes an expired OAuth token (``None`` for a webhook).
    """

    def __init__(self, pacer: Pacer, policy: RetryPolicy, refresher: TokenRefresher | None) -> None:
        self.pacer = pacer
        self.policy = policy
        self.refresher = refresher

    async def run(
        self,
        send: Callable[[], Awaitable[T]],
        spends: Mapping[str, float],
        *,
        idempotent: bool,
        label: str,
        authorized: bool = True,
    ) -> tuple[T, Reservation]:
        """
        Attempt ``send()`` until it succeeds; return its result with the operating time it
        reserved, which the caller settles (``Pacer.finish``) with what the portal reported.

        *spends* is the work per method whose operating time it may cost. *authorized*:
        the request carries the OAuth token, so an expired token is refreshed and the
        request replayed once (a download's signed URL carries none).
        """
        attempts = self.attempts(idempotent=idempotent)
        refresher = self.refresher if authorized else None
        refreshed = False
        probe = False
        expired: str | None = None  # the access token the portal refused, until refreshed
        if refresher is not None:
            await refresher.load()
        while True:
            attempts.begin()
            if expired is not None and refresher is not None:
                try:
                    await refresher.refresh(expired)
                except CoordinatorUnavailable as unavailable:
                    # No refresh without the coordinator's lock, and no request without a
                    # token: try the refresh again after a backoff, as a request not sent.
                    await self.pause_or_raise(attempts, unavailable, spends, label=label)
                    continue
                expired, refreshed = None, True
            reservation = await self.pacer.pace(spends, probe=probe)
            token = None if refresher is None else refresher.token
            try:
                result = await send()
            except BitrixError as error:
                kind = retry_kind(error)
                # A refusal was not processed; any other error may have cost time.
                await self.pacer.finish(reservation, {}, spent=kind not in _REFUSALS)
                if kind is Retry.REFRESH and token is not None and not refreshed:
                    expired = token  # refreshed at the top of the next attempt
                    continue
                await self.pause_or_raise(attempts, error, spends, label=label)
                # Refused for operating time, it has waited for the reset: it is the probe.
                probe = kind is Retry.WAIT_RESET
                continue
            except BaseException:
                self.pacer.abandon(reservation)  # cancelled: maybe processed
                raise
            return result, reservation

    def attempts(self, *, idempotent: bool) -> Attempts:
        """A fresh retry driver under this policy (one per call or batch command)."""
        return Attempts(self.policy, idempotent=idempotent)

    def judge(self, attempts: Attempts, error: BitrixError, methods: Iterable[str]) -> Verdict:
        """
        The verdict on a failed attempt of a call spending *methods*, applied to the limits.

        This is the one place the bucket is penalised for QUERY_LIMIT_EXCEEDED (limits.md:
        the portal's counter is full), and where retries are counted.
        """
        methods = tuple(methods)
        verdict = attempts.judge(error, reset_at=self.pacer.reset_at(methods))
        if verdict.penalize:
            self.pacer.penalize()
        if retry_kind(error) is Retry.WAIT_RESET:
            # limits.md: the method is blocked until its window moves on; hold its other
            # requests too (a command refused inside a batch included).
            self.pacer.refused(methods)
        if verdict.delay is not None:
            stats = self.pacer.stats
            stats.retries += 1
            stats.retry_wait += verdict.delay
        return verdict

    async def pause_or_raise(
        self, attempts: Attempts, error: BitrixError, methods: Iterable[str], *, label: str
    ) -> None:
        """Sleep before the next attempt, or raise the final error."""
        verdict = self.judge(attempts, error, methods)
        if verdict.delay is None:
            _raise(verdict.error)
        log.debug(
            "%s: %s, retry %d in %.3fs", label, _code_text(error), attempts.attempt, verdict.delay
        )
        await self.pacer.backoff(verdict.delay)


def _raise(error: BitrixError) -> NoReturn:
    # from None: the chained cause would be the aiohttp failure, whose text names the
    # request URL (and a webhook's URL holds its secret code).
    raise error from None


def _code_text(error: BitrixError) -> str:
    if error.code is not None:
        return f"error {error.code!r}"
    return type(error).__name__ if error.status is None else f"HTTP {error.status}"
