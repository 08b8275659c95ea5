"""Periodic per-camera rate lines in the log: what an operator reads without Grafana."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from streamd.camera.source import CameraSource
from streamd.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class RateLogger:
    def __init__(self, sources: Callable[[], Iterable[CameraSource]], interval_s: float = 10.0) -> None:
        self.sources = sources
        self.interval_s = interval_s
        self._last: dict[str, tuple[float, int, int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="rate-log")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.report()

    def report(self) -> None:
        now = time.monotonic()
        for source in self.sources():
            m = source.metrics
            previous = self._last.get(source.camera_id)
            self._last[source.camera_id] = (now, m.decoded, m.sampled, m.replaced)
            if previous is None:
                continue
            then, decoded, sampled, replaced = previous
            span = max(now - then, 1e-9)
            source.log.info(
                "%s: decoded %.1f fps, sampled %.1f fps, dropped %d, reconnects %d%s",
                source.state,
                (m.decoded - decoded) / span,
                (m.sampled - sampled) / span,
                m.replaced - replaced,
                m.reconnects,
                f", last error: {source.reason}" if source.reason else "",
            )
