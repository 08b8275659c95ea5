"""Per-camera rates, measured every interval: a log line per camera, and the figures
`/status` and systemd's STATUS= show."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streamd.base.failures import Failures
from streamd.base.tasks import cancel_and_wait
from streamd.camera.source import CameraSource

log = logging.getLogger(__name__)


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


class RateLogger:
    def __init__(
        self,
        sources: Callable[[], Iterable[CameraSource]],
        interval_s: float = 10.0,
        analysed: Callable[[str], int] | None = None,
        failures: Failures | None = None,
    ) -> None:
        self.failures = failures or Failures()
        self.sources = sources
        self.interval_s = interval_s
        self.analysed = analysed or (lambda camera_id: 0)
        self.rates: dict[str, Rates] = {}
        self._listeners: list[Callable[[dict[str, float]], None]] = []
        self._last: dict[str, _Counts] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = self.failures.watch(asyncio.create_task(self._run(), name="rate-log"), "rate-log")

    async def stop(self, _timeout: float = 0.0) -> bool:
        await cancel_and_wait(self._task)
        self._task = None
        return True

    def listen(self, listener: Callable[[dict[str, float]], None]) -> None:
        """Call `listener` with each camera's decoded frames/s after every measurement."""
        self._listeners.append(listener)

    def analysed_fps_total(self) -> float:
        return sum(rates.analysed_fps for rates in self.rates.values())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.report()

    def report(self) -> None:
        now = time.monotonic()
        current = {s.camera_id for s in self.sources()}
        for gone in set(self.rates) - current:
            self.rates.pop(gone, None)
            self._last.pop(gone, None)
        for source in self.sources():
            m = source.metrics
            counts = _Counts(now, m.decoded, m.sampled, m.replaced, self.analysed(source.camera_id))
            previous = self._last.get(source.camera_id)
            self._last[source.camera_id] = counts
            if previous is None:
                continue
            span = max(now - previous.at, 1e-9)
            rates = Rates(
                (counts.decoded - previous.decoded) / span,
                (counts.sampled - previous.sampled) / span,
                (counts.analysed - previous.analysed) / span,
            )
            self.rates[source.camera_id] = rates
            source.log.info(
                "%s: decoded %.1f fps, sampled %.1f fps, analysed %.1f fps, dropped %d, reconnects %d%s",
                source.state,
                rates.decoded_fps,
                rates.sampled_fps,
                rates.analysed_fps,
                counts.replaced - previous.replaced,
                m.reconnects,
                f", last error: {source.reason}" if source.reason else "",
            )
        decoded = {camera_id: rates.decoded_fps for camera_id, rates in self.rates.items()}
        for listener in self._listeners:
            listener(decoded)
