"""Reconnect delays: exponential backoff with full jitter.

Full jitter (a uniform delay between 0 and the current bound) spreads the reconnects
of many cameras that failed together, e.g. after a switch reboot, instead of having
them all hammer the recorder at the same instants.
"""

from __future__ import annotations

import random

from streamd.config.schema import BackoffConfig


class Backoff:
    def __init__(self, config: BackoffConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.failures = 0
        self._rng = rng or random.Random()

    @property
    def bound(self) -> float:
        """The largest delay the next failure can wait."""
        # 2**failures is capped before it can grow without bound.
        exponent = min(self.failures, 32)
        return min(self.config.max_s, self.config.initial_s * float(2**exponent))

    def next_delay(self) -> float:
        """Delay before the next attempt; each call counts one more failure."""
        delay = self._rng.uniform(0, self.bound)
        self.failures += 1
        return delay

    def streamed_for(self, seconds: float) -> None:
        """Report a run of healthy streaming; a long enough one forgives past failures."""
        if seconds >= self.config.reset_after_s:
            self.failures = 0
