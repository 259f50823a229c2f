"""The pure throttle and retry pieces, on an injected clock."""

from __future__ import annotations

import math

import pytest

from bitrix_images._retry import RetryPolicy, backoff_delay
from bitrix_images._throttle import LeakyBucket, RateLimit


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
    "kwargs",
    [
        {"rate": 0},
        {"rate": -1.0},
        {"burst": 0},
        {"burst": True},
        {"max_in_flight": 1.5},
        {"operating_limit": 0},
        {"operating_headroom": 0},
        {"operating_headroom": 1.5},
        {"operating_window": 0},
        {"operating_window": math.inf},
    ],
)
def test_rate_limit_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- each message names its own field
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_rate_limit_defaults_are_the_portals() -> None:
    assert (RateLimit().rate, RateLimit().burst) == (2.0, 50)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": True},
        {"initial_delay": -1},
        {"initial_delay": 5, "max_delay": 1},
        {"max_wait": -1},
    ],
)
def test_retry_policy_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=4.0)
    assert backoff_delay(policy, 1, lambda: 1.0) == 0.5
    assert backoff_delay(policy, 3, lambda: 1.0) == 2.0
    assert backoff_delay(policy, 10, lambda: 1.0) == 4.0
    assert backoff_delay(policy, 10, lambda: 0.0) == 0.0
    assert 0 <= backoff_delay(policy, 2) <= 1.0
