"""
``RetryPolicy`` and the pure delay function the session sleeps on.

The semantics follow stamina's: retry only what is known to be safe, bound both the number
of attempts and the total time spent waiting, back off exponentially with full jitter and a
cap, and honour a wait the server gives (``operating_reset_at``) within that budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

__all__ = ["RetryPolicy", "backoff_delay", "check_number"]


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_number(attribute.name, value)
    if not value >= 0:  # also refuses NaN, for which every comparison is false
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def check_number(name: str, value: object) -> None:
    """A real number (not a bool, not a numeric string), named in the error when it is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")


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
    ``RetryPolicy(initial_delay=0.001, max_delay=0.01)``.
    """

    max_attempts: int = attrs.field(default=6)
    initial_delay: float = attrs.field(default=0.5, validator=_positive)
    max_delay: float = attrs.field(default=30.0, validator=_positive)
    max_wait: float = attrs.field(default=600.0, validator=_positive)

    @max_attempts.validator
    def _check_attempts(self, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {value!r}")

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
    ceiling = min(policy.max_delay, policy.initial_delay * 2.0 ** (attempt - 1))
    return ceiling * random_()
