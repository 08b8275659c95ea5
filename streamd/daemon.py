"""The daemon: wires configuration, cameras, the frame consumer and metrics together.

Start-up: metrics listener first (so a scrape sees cameras starting), then the engine
(loaded in a thread, warmed up), then cameras. Shutdown in phases, each bounded: stop
the rate log, stop the cameras (their threads finish their current read), let the
detector finish what the engine holds and flush the sinks, then close the listener.
Signal handlers only set a flag.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from streamd.camera.source import CameraSource
from streamd.config import StreamsConfig
from streamd.consumers import DiscardingConsumer
from streamd.detector import Detector
from streamd.engine.factory import create_engines
from streamd.http_server import MetricsServer
from streamd.metrics import Metrics
from streamd.rate_log import RateLogger
from streamd.sinks.factory import build_sinks
from streamd.supervisor import FrameConsumer, Supervisor
from streamd.threads import run_in_thread

log = logging.getLogger(__name__)


class Daemon:
    def __init__(
        self,
        config: StreamsConfig,
        consumer: FrameConsumer | None = None,
        metrics_port: int | None = None,
        rate_log_interval_s: float = 10.0,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.consumer = consumer
        self.supervisor: Supervisor | None = None
        self.http = MetricsServer(
            config.metrics.host,
            config.metrics.port if metrics_port is None else metrics_port,
            self.metrics.registry,
        )
        self.rate_log = RateLogger(self.sources, rate_log_interval_s)
        self._stop_requested = asyncio.Event()
        self._started = False

    def sources(self) -> list[CameraSource]:
        return self.supervisor.sources() if self.supervisor else []

    async def start(self) -> None:
        self.http.start()
        if self.consumer is None:
            # Loading a model takes seconds: off the event loop.
            self.consumer = await run_in_thread(self._build_consumer, name="engine-load")
        await self.consumer.start()
        self.supervisor = Supervisor(self.metrics, self.consumer)
        self.metrics.watch_cameras(self.sources)
        await self.supervisor.apply(self.config)
        self.rate_log.start()
        self._started = True
        log.info("streamd running with %d camera(s)", len(self.sources()))

    def _build_consumer(self) -> FrameConsumer:
        config = self.config
        if config.engine is None:
            log.warning("no `engine` section: frames are ingested and discarded, nothing is detected")
            return DiscardingConsumer()
        engines = create_engines(config.engine, config.batcher.max_batch)
        sinks = build_sinks(config.sinks, self.metrics)
        return Detector(engines, config.batcher, config.postprocess, sinks, self.metrics, config.engine.warmup)

    async def stop(self) -> None:
        """Shut down in phases; safe to call more than once."""
        if not self._started:
            self.http.stop()
            return
        self._started = False
        await self.rate_log.stop()
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.consumer is not None:
            await self.consumer.stop()
        self.http.stop()
        log.info("streamd stopped")

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            await self.start()
            await self._stop_requested.wait()
            log.info("shutting down")
        finally:
            await self.stop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
