"""The pure throttle and retry pieces, on an injected clock."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bitrix_images._calls.retry import Attempts, RetryPolicy, backoff_delay
from bitrix_images._wire.limits import LeakyBucket, RateLimit
from bitrix_images.exceptions import (
    NotSent,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    TransportError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_lets_a_burst_through_then_paces() -> None:
    clock = Clock()
    bucket = LeakyBucket(rate=2.0, burst=50, clock=clock)
    waits = [bucket.reserve() for _ in range(52)]
    # One slot is kept back: 49 at once, then one every 0.5 s.
    assert waits[:49] == [0.0] * 49
    assert waits[49:] == pytest.approx([0.5, 1.0, 1.5])


def test_bucket_margin_is_at_least_fifty_milliseconds_of_drain() -> None:
    bucket = LeakyBucket(rate=200.0, burst=100, clock=Clock())
    waits = [bucket.reserve() for _ in range(92)]
    assert waits[:90] == [0.0] * 90  # 10 slots (50 ms at 200/s) kept back, not 1
    assert waits[90:] == pytest.approx([0.005, 0.010])


def test_bucket_drains_with_time() -> None:
    clock = Clock()
    bucket = LeakyBucket(rate=2.0, burst=5, clock=clock)
    for _ in range(4):
        assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.5)
    clock.now += 10
    assert bucket.reserve() == 0.0


def test_bucket_penalty_after_a_refusal() -> None:
    clock = Clock()
    bucket = LeakyBucket(rate=2.0, burst=50, clock=clock)
    bucket.penalize()
    assert bucket.reserve() == pytest.approx(0.5)


def test_unlimited_bucket() -> None:
    bucket = LeakyBucket(rate=math.inf, burst=1, clock=Clock())
    assert [bucket.reserve() for _ in range(1000)] == [0.0] * 1000


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rate": 0}, ValueError),
        ({"rate": -1.0}, ValueError),
        ({"rate": "2"}, TypeError),
        ({"burst": 0}, ValueError),
        ({"burst": True}, TypeError),
        ({"max_in_flight": 1.5}, TypeError),
        ({"operating_limit": 0}, ValueError),
        ({"operating_headroom": 0}, ValueError),
        ({"operating_headroom": 1.5}, ValueError),
        ({"operating_window": 0}, ValueError),
        ({"operating_window": math.inf}, ValueError),
    ],
)
def test_rate_limit_validation(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_rate_limit_defaults_are_the_portals() -> None:
    assert (RateLimit().rate, RateLimit().burst) == (2.0, 50)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": True}, TypeError),
        ({"max_attempts": 2.0}, TypeError),
        ({"initial_delay": -1}, ValueError),
        ({"initial_delay": "1"}, TypeError),
        ({"initial_delay": 5, "max_delay": 1}, ValueError),
        ({"max_wait": -1}, ValueError),
    ],
)
def test_retry_policy_validation(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=4.0)
    assert backoff_delay(policy, 1, lambda: 1.0) == 0.5
    assert backoff_delay(policy, 3, lambda: 1.0) == 2.0
    assert backoff_delay(policy, 10, lambda: 1.0) == 4.0
    assert backoff_delay(policy, 10, lambda: 0.0) == 0.0
    assert 0 <= backoff_delay(policy, 2) <= 1.0


def test_backoff_does_not_overflow_past_a_thousand_attempts() -> None:
    # 2.0 ** 1024 raises OverflowError; the exponent stops growing long before.
    policy = RetryPolicy(max_attempts=10**9, initial_delay=0.5, max_delay=4.0)
    assert backoff_delay(policy, 1025, lambda: 1.0) == 4.0
    assert backoff_delay(policy, 10**9, lambda: 1.0) == 4.0
    attempts = Attempts(policy, idempotent=True, random_=lambda: 1.0)
    attempts.attempt = 5000
    verdict = attempts.judge(RateLimited("busy", code="QUERY_LIMIT_EXCEEDED", status=503))
    assert verdict.delay == 4.0


def _driver(**policy: Any) -> Attempts:
    settings: dict[str, Any] = {"initial_delay": 1.0, "max_delay": 8.0, "max_wait": 20.0}
    settings.update(policy)
    return Attempts(
        RetryPolicy(**settings), idempotent=False, clock=lambda: 1000.0, random_=lambda: 1.0
    )


def test_the_driver_backs_off_and_asks_for_the_bucket_penalty() -> None:
    attempts = _driver()
    busy = RateLimited("busy", code="QUERY_LIMIT_EXCEEDED", status=503)
    delays = []
    for _ in range(3):
        attempts.begin()
        verdict = attempts.judge(busy)
        assert verdict.penalize
        delays.append(verdict.delay)
    assert delays == [1.0, 2.0, 4.0]
    assert attempts.waited == 7.0


def test_the_driver_waits_for_the_reset_within_max_wait() -> None:
    limit = RateLimited("spent", code="OPERATION_TIME_LIMIT", status=429)
    attempts = _driver()
    attempts.begin()
    verdict = attempts.judge(limit, reset_at=1010.0)
    assert (verdict.delay, verdict.penalize) == (11.0, False)  # RESET_GRAIN included
    attempts.begin()
    verdict = attempts.judge(limit, reset_at=1010.0)  # 11 more would pass max_wait=20
    assert verdict.delay is None
    assert verdict.error is limit
    assert limit.attempts == 2
    attempts = _driver()
    attempts.begin()
    assert attempts.judge(limit).delay == 8.0  # no reset known: max_delay


def test_the_driver_never_replays_a_write_that_may_have_landed() -> None:
    attempts = _driver()
    attempts.begin()
    lost = TransportError("the portal's answer is not JSON", status=502, method="x.add")
    verdict = attempts.judge(lost)
    assert verdict.delay is None
    assert type(verdict.error) is OutcomeUnknown
    # Refused before it was sent: safe to resend, and a plain TransportError at the end.
    attempts = _driver(max_attempts=2)
    refused = NotSent("cannot connect", method="x.add")
    attempts.begin()
    assert attempts.judge(refused).delay == 1.0
    attempts.begin()
    final = attempts.judge(refused)
    assert (final.delay, type(final.error), final.error.attempts) == (None, TransportError, 2)


def test_the_driver_reports_a_load_refusal_as_rate_limited() -> None:
    attempts = _driver(max_attempts=1)
    attempts.begin()
    refusal = ServerError("overloaded", code="OVERLOAD_LIMIT", status=503)
    verdict = attempts.judge(refusal)
    assert (verdict.delay, verdict.penalize) == (None, False)
    assert type(verdict.error) is RateLimited
    assert verdict.error.code == "OVERLOAD_LIMIT"
