"""Per-camera rates: one measurement of every camera's counters, taken once a second.

It is the one clock the observers read: the rate log line (every `log_interval_s`, over
that interval), `/status` and systemd's STATUS= (over the same sliding window), the
overload governor and the NVDEC plan (told the last second's rates at every tick).
Nothing else keeps its own snapshot of the counters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from streamd.base.failures import Failures
from streamd.base.tasks import cancel_and_wait
from streamd.camera.source import CameraSource
from streamd.camera.state import CameraStatus

log = logging.getLogger(__name__)

TICK_S = 1.0


@dataclass(frozen=True)
class Rates:
    decoded_fps: float
    sampled_fps: float
    analysed_fps: float


@dataclass(frozen=True)
class _Counts:
    at: float
    decoded: int
    sampled: int
    replaced: int
    analysed: int


def _between(before: _Counts, after: _Counts) -> Rates:
    span = max(after.at - before.at, 1e-9)
    return Rates(
        (after.decoded - before.decoded) / span,
        (after.sampled - before.sampled) / span,
        (after.analysed - before.analysed) / span,
    )


RatesListener = Callable[[Mapping[str, Rates], float], None]


class RateClock:
    def __init__(
        self,
        sources: Callable[[], Iterable[CameraSource]],
        log_interval_s: float = 10.0,
        analysed: Callable[[str], int] | None = None,
        failures: Failures | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures or Failures()
        self.sources = sources
        self.log_interval_s = log_interval_s
        self.analysed = analysed or (lambda camera_id: 0)
        self.clock = clock
        self.rates: dict[str, Rates] = {}
        """Each camera's rates over the last `log_interval_s` (or since it started)."""
        self.last_second: dict[str, Rates] = {}
        """Each camera's rates over the last tick."""
        self._window = max(1, round(log_interval_s / TICK_S))
        self._history: dict[str, deque[_Counts]] = {}
        self._listeners: list[RatesListener] = []
        self._logged_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def listen(self, listener: RatesListener) -> None:
        """Call `listener(last_second, now)` after every tick."""
        self._listeners.append(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = self.failures.watch(asyncio.create_task(self._run(), name="rate-clock"), "rate-clock")

    async def stop(self, _timeout: float = 0.0) -> bool:
        await cancel_and_wait(self._task)
        self._task = None
        return True

    def analysed_fps_total(self) -> float:
        return sum(rates.analysed_fps for rates in self.rates.values())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self) -> None:
        """Read every camera's counters once; update the rates; tell the listeners."""
        now = self.clock()
        sources = list(self.sources())
        current = {source.camera_id for source in sources}
        for gone in set(self._history) - current:
            del self._history[gone]
            self.rates.pop(gone, None)
            self.last_second.pop(gone, None)
        statuses = [source.status() for source in sources]
        for status in statuses:
            counts = _Counts(now, status.decoded, status.sampled, status.replaced, self.analysed(status.camera_id))
            history = self._history.setdefault(status.camera_id, deque(maxlen=self._window + 1))
            history.append(counts)
            if len(history) > 1:
                self.last_second[status.camera_id] = _between(history[-2], counts)
                self.rates[status.camera_id] = _between(history[0], counts)
        if self._logged_at is None:
            self._logged_at = now
        elif now - self._logged_at >= self.log_interval_s * 0.999:
            self._logged_at = now
            self._log(sources, statuses)
        for listener in self._listeners:
            listener(self.last_second, now)

    def _log(self, sources: list[CameraSource], statuses: list[CameraStatus]) -> None:
        for source, status in zip(sources, statuses, strict=True):
            rates, history = self.rates.get(status.camera_id), self._history[status.camera_id]
            if rates is None:
                continue
            source.log.info(
                "%s: decoded %.1f fps, sampled %.1f fps, analysed %.1f fps, dropped %d, reconnects %d%s",
                status.state,
                rates.decoded_fps,
                rates.sampled_fps,
                rates.analysed_fps,
                history[-1].replaced - history[0].replaced,
                status.reconnects,
                f", last error: {status.reason}" if status.reason else "",
            )
