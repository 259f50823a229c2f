"""
``RetryPolicy`` and ``Attempts``, the one retry driver every call, download and batch command uses.

The semantics follow stamina's: retry only what is known to be safe, bound both the number
of attempts and the total time spent waiting, back off exponentially with full jitter and a
cap, and honour a wait the server gives (``operating_reset_at``) within that budget.
``Attempts`` is pure: it reads an injected clock and sleeps never; its caller sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

import attrs

from .._wire.clock import now
from .._wire.limits import RESET_GRAIN
from .._wire.protocol import Retry, retry_kind
from .._wire.validate import check_int, check_number
from ..exceptions import BitrixError, NotSent, OutcomeUnknown, RateLimited, TransportError

__all__ = ["Attempts", "RetryPolicy", "Verdict", "backoff_delay"]

# 2.0 ** 1024 overflows a float (OverflowError); past this exponent every backoff is capped
# by max_delay anyway, so the exponent stops growing here (as stamina and openai-python do).
_MAX_EXPONENT: Final = 64


def _not_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_number(attribute.name, value, minimum=0)


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_int(attribute.name, value, minimum=1)


@attrs.frozen
class RetryPolicy:
    """
    How a call is retried when the portal refuses it for load or a transient failure.

    Args:
        max_attempts: requests made for one call at most, the first included.
        initial_delay: the cap of the first backoff, in seconds; it doubles per attempt.
        max_delay: the largest single backoff.
        max_wait: the total seconds one call may spend waiting (backoffs and operating-time
            resets together); a wait that would exceed it raises at once instead.

    The defaults are the production ones. Tests pass tiny delays, for example
    ``RetryPolicy(initial_delay=0.001, max_delay=0.01)``, or make every wait instant with
    ``bitrix_images.testing.instant_retries()``.
    """

    max_attempts: int = attrs.field(default=6, validator=_at_least_one)
    initial_delay: float = attrs.field(default=0.5, validator=_not_negative)
    max_delay: float = attrs.field(default=30.0, validator=_not_negative)
    max_wait: float = attrs.field(default=600.0, validator=_not_negative)

    def __attrs_post_init__(self) -> None:
        if self.initial_delay > self.max_delay:
            raise ValueError("initial_delay must not exceed max_delay")


def backoff_delay(
    policy: RetryPolicy, attempt: int, random_: Callable[[], float] = random.random
) -> float:
    """
    The wait after failed attempt number *attempt* (1-based): full jitter.

    ``uniform(0, min(max_delay, initial_delay * 2 ** (attempt - 1)))``, so that many clients
    refused at once do not come back at once (limits.md: "retry calls with increasing delay").
    """
    exponent = min(attempt - 1, _MAX_EXPONENT)
    ceiling = min(policy.max_delay, policy.initial_delay * 2.0**exponent)
    return ceiling * random_()


@attrs.frozen
class Verdict:
    """
    What follows a failed attempt.

    Attributes:
        delay: seconds to wait before the next attempt, or ``None`` when there is none.
        error: the error to raise when *delay* is ``None`` (the failed attempt's otherwise).
        penalize: the portal said its request counter is full (QUERY_LIMIT_EXCEEDED or
            OVERLOAD_LIMIT): the caller's leaky bucket must take itself as full.
    """

    delay: float | None
    error: BitrixError
    penalize: bool = False


class Attempts:
    """
    One call's attempts: how many were made, the seconds waited, and what follows a failure.

    Args:
        policy: the bounds on attempts and waiting.
        idempotent: whether a request that may have reached the portal may be sent again.
        clock: Unix time, for waits until ``operating_reset_at`` (the clock in force).
        random_: the jitter source.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        idempotent: bool,
        clock: Callable[[], float] = now,
        random_: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.attempt = 0
        self.waited = 0.0
        self._clock = clock
        self._random = random_

    def begin(self) -> int:
        """Count the attempt about to be made; return its number (1-based)."""
        self.attempt += 1
        return self.attempt

    def judge(self, error: BitrixError, *, reset_at: float | None = None) -> Verdict:
        """
        The verdict on the failed current attempt.

        *reset_at* is the latest ``operating_reset_at`` the portal reported for the methods
        this call spends (``None`` if it never said), for OPERATION_TIME_LIMIT.
        """
        error.attempts = self.attempt
        kind = retry_kind(error)
        if self.attempt >= self.policy.max_attempts:
            return Verdict(None, self._final(error, kind))
        delay = self._delay(error, kind, reset_at)
        # limits.md: QUERY_LIMIT_EXCEEDED means the portal's counter is full, whatever
        # follows; the caller applies this to its bucket.
        penalize = kind is Retry.BACKOFF
        if delay is None or self.waited + delay > self.policy.max_wait:
            return Verdict(None, self._final(error, kind), penalize)
        self.waited += delay
        return Verdict(delay, error, penalize)

    def _delay(self, error: BitrixError, kind: Retry, reset_at: float | None) -> float | None:
        if kind is Retry.BACKOFF:
            # The portal refused before processing (limits.md): safe for every method.
            return backoff_delay(self.policy, self.attempt, self._random)
        if kind is Retry.WAIT_RESET:
            # limits.md, "Resource Intensity Limits": the method is blocked until the window
            # moves on; without a reset time the longest single backoff is the best guess.
            if reset_at is None:
                return self.policy.max_delay
            return max(reset_at + RESET_GRAIN - self._clock(), RESET_GRAIN)
        if kind is Retry.TRANSIENT and (self.idempotent or isinstance(error, NotSent)):
            return backoff_delay(self.policy, self.attempt, self._random)
        return None

    def _final(self, error: BitrixError, kind: Retry) -> BitrixError:
        """The exception to raise once no further attempt is allowed."""
        attempt = self.attempt
        if (
            kind is Retry.TRANSIENT
            and not self.idempotent
            and isinstance(error, TransportError)
            and not isinstance(error, (OutcomeUnknown, NotSent))
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
        if type(error) is NotSent:  # internal; a public subclass (CoordinatorUnavailable) stays
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
