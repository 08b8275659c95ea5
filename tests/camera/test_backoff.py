from __future__ import annotations

import random

from streamd.camera.backoff import Backoff
from streamd.config.schema import BackoffConfig


def make(initial: float = 1, cap: float = 30, reset_after: float = 30) -> Backoff:
    return Backoff(BackoffConfig(initial_s=initial, max_s=cap, reset_after_s=reset_after), random.Random(7))


def test_bound_doubles_up_to_the_cap() -> None:
    backoff = make(initial=1, cap=30)
    bounds = []
    for _ in range(8):
        bounds.append(backoff.bound)
        backoff.next_delay()
    assert bounds == [1, 2, 4, 8, 16, 30, 30, 30]


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    backoff = make(initial=8, cap=8)
    delays = [backoff.next_delay() for _ in range(2000)]
    assert all(0 <= d <= 8 for d in delays)
    assert min(delays) < 0.5 and max(delays) > 7.5  # not a fixed delay, not "half plus jitter"
    assert 3.5 < sum(delays) / len(delays) < 4.5


def test_many_failures_do_not_overflow() -> None:
    backoff = make()
    backoff.failures = 10_000
    assert backoff.bound == 30


def test_long_healthy_streaming_resets_short_does_not() -> None:
    backoff = make(reset_after=30)
    for _ in range(5):
        backoff.next_delay()
    backoff.streamed_for(5)
    assert backoff.bound == 30  # still escalated
    backoff.streamed_for(31)
    assert backoff.bound == 1
