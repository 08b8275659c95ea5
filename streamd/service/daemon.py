"""The daemon: wires configuration, cameras, the frame consumer and metrics together.

Start-up is a stack (`Lifecycle`): metrics listener first (so a scrape sees cameras
starting), then the engine (loaded in a thread, warmed up), then cameras, then the
background loops, then READY=1 to systemd. Each part pushes how to stop it, so a start
that fails half way stops exactly what had started. A stop signal during start-up
abandons the start at once (a model load or warm-up still running in its thread is left
to the process exit): the daemon exits 0 within seconds and never sends READY.

Reload (`streamd.service.reload`: the file changed and then stood still for
`reload.settle_s`, or SIGHUP): an invalid file is rejected with every error logged and
the running set untouched; a valid one is applied here as a diff: cameras are added,
removed or restarted, untouched ones keep streaming; `postprocess`, `health`,
`overload` and `nvdec` apply at once; `metrics`, `engine`, `batcher` and `sinks` need a
restart and are reported, not applied. Once stopping, reloads are ignored.

Shutdown (SIGTERM/SIGINT): STOPPING=1, then the stack unwinds within one deadline
(`shutdown_timeout_s`) shared out by phase: the background loops, the cameras (a camera
stuck connecting is left behind at the end of its share), the detector (engine drain,
then sink flush: the largest share, and whatever the earlier phases did not use), the
listener. Exit 0 when every phase finished; 1 when one did not (records may be missing).
A second signal while stopping exits at once (1); a signal after a clean stop is ignored.
Signal handlers only set flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from streamd.analysis.detector import Detector
from streamd.analysis.discard import DiscardingConsumer
from streamd.base.failures import Failures
from streamd.base.threads import run_in_thread
from streamd.camera.nvdec import nvdec_unavailable_reason
from streamd.camera.placement import DecoderPlacement
from streamd.camera.source import CameraSource
from streamd.camera.state import CameraState
from streamd.config.schema import Overrides, StreamsConfig
from streamd.engine.factory import create_engines
from streamd.gpu.context import share_primary_context
from streamd.gpu.nvdec_budget import NvdecBudget, budget_for, gpu_name
from streamd.metrics.gpu import GpuCollector
from streamd.metrics.registry import Metrics
from streamd.monitor.health import Health
from streamd.monitor.http_server import MetricsServer
from streamd.monitor.overload import OverloadGovernor
from streamd.monitor.rates import RateClock, Rates
from streamd.monitor.systemd import Notifier
from streamd.service.cameras import AnalysisStage, Supervisor
from streamd.service.lifecycle import Lifecycle
from streamd.service.reload import ConfigReload
from streamd.service.signals import STOP_SIGNALS, EarlySignals, ignore_from_now_on
from streamd.sinks.factory import build_sinks

log = logging.getLogger(__name__)

# Shares of the stop deadline. The detector's is the largest: the engine drain and the
# sink flush are where records are lost if time runs out.
_SHARE_LOOPS = 0.02
_SHARE_CAMERAS = 0.2
_SHARE_DETECTOR = 0.7
_SHARE_LISTENER = 0.05


class Daemon:
    def __init__(
        self,
        config: StreamsConfig,
        config_path: Path | None = None,
        config_sha256: str = "",
        consumer: AnalysisStage | None = None,
        metrics_port: int | None = None,
        rate_log_interval_s: float = 10.0,
        notifier: Notifier | None = None,
        shutdown_timeout_s: float = 30.0,
        watch_config: bool = True,
        detector: Detector | None = None,
        early_signals: EarlySignals | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        """`detector` or another `consumer` of the frames may be given (tests, benchmarks);
        otherwise the detector is built from the config's `engine` (none: frames are discarded).
        `overrides` (`streamd run`'s options) apply over the file now and on every reload."""
        self.overrides = overrides or Overrides()
        self.config = config = self.overrides.apply(config)
        self.config_path = config_path
        self.config_sha256 = config_sha256
        self.metrics = Metrics()
        self.failures = Failures(lambda component: self.metrics.component_failures.labels(component).inc())
        self.detector = detector
        self.consumer: AnalysisStage | None = detector or consumer
        self.supervisor: Supervisor | None = None
        self.notifier = notifier or Notifier()
        self.shutdown_timeout_s = shutdown_timeout_s
        self.watch_config = watch_config and config_path is not None
        self.early_signals = early_signals or EarlySignals()
        self.rates = RateClock(self.sources, rate_log_interval_s, self._analysed, self.failures)
        self.placement = DecoderPlacement(None, self.metrics.nvdec_planned)
        self.rates.listen(self._measured_decoding)
        self._gpu_name: str | None = None
        self.health = Health(
            lambda: (self.config, self.config_path, self.config_sha256),
            self.sources,
            self.rates,
            self.metrics,
            self.notifier,
            self.failures,
            self.placement,
        )
        self.overload = OverloadGovernor(lambda: self.config.overload, self.sources, self.metrics)
        self.rates.listen(self.overload.on_rates)
        self.http = MetricsServer(
            config.metrics.host,
            config.metrics.port if metrics_port is None else metrics_port,
            self.metrics.registry,
            health=self.health,
            web_config=Path(config.metrics.web_config) if config.metrics.web_config else None,
            pictures=config.metrics.pictures,
        )
        self.lifecycle = Lifecycle()
        self._stop_requested = asyncio.Event()
        self._signals = 0
        self._stopping = False
        self._reload_pending = False
        self._reload = (
            None
            if config_path is None
            else ConfigReload(
                config_path,
                lambda: (self.config, self.config_sha256),
                self._apply_config,
                self.overrides,
                self.metrics,
                self.failures,
            )
        )

    def sources(self) -> list[CameraSource]:
        return self.supervisor.sources() if self.supervisor else []

    def _measured_decoding(self, _last_second: Mapping[str, Rates], _now: float) -> None:
        """The NVDEC plan follows what each camera costs, over the rate window."""
        self.placement.measured(self.sources(), {cid: rates.decoded_fps for cid, rates in self.rates.rates.items()})

    def _analysed(self, camera_id: str) -> int:
        return self.detector.analysed(camera_id) if self.detector is not None else 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start every part, each pushing its stop; `stop` undoes whatever got started."""
        # Before anything uses CUDA (the engine, the GPU letterbox): NVDEC shares the
        # primary context only if it has the flags FFmpeg wants (streamd.gpu.context).
        problem = share_primary_context()
        if problem is not None:
            log.error("NVDEC cannot share the GPU: %s; cameras with decode auto decode on the CPU", problem)
        elif nvdec_unavailable_reason() is None:
            self._gpu_name = gpu_name()
            self.placement.set_budget(self._nvdec_budget(self.config), [])
        lifecycle = self.lifecycle
        self.http.start()
        lifecycle.started("metrics listener", self._stop_listener, _SHARE_LISTENER)
        gpu = GpuCollector.create()
        if gpu is not None:
            self.metrics.registry.register(gpu)
        if self.config_path is not None:
            self.metrics.loaded_config(str(self.config_path), self.config_sha256)
        self.metrics.running_shard(self.config.shard)
        if self.consumer is None:
            # Loading a model takes seconds: off the event loop.
            self.detector = await run_in_thread(self._build_detector, name="engine-load")
            self.consumer = self.detector or DiscardingConsumer()
        self.health.detector = detector = self.detector
        if detector is not None:
            self.metrics.engine_busy.set_function(detector.engine_stuck_s)
        await self.consumer.start()
        lifecycle.started("detector" if self.detector else "frame consumer", self.consumer.stop, _SHARE_DETECTOR)
        self.supervisor = supervisor = Supervisor(self.metrics, self.consumer, self.failures, self.placement)
        lifecycle.started("cameras", supervisor.stop, _SHARE_CAMERAS)
        self.metrics.watch_cameras(self.sources, [state.value for state in CameraState], CameraState.streaming.value)
        await supervisor.apply(self.config)
        for name, part in (("rate clock", self.rates), ("health", self.health)):
            part.start()
            lifecycle.started(name, part.stop, _SHARE_LOOPS)
        if self._reload is not None:
            if self.watch_config:
                self._reload.start_watching()
            lifecycle.started("config reload", self._reload.stop, _SHARE_LOOPS)
        self.health.phase = "running"
        shard = self.config.this_shard
        of_shard = (
            f" (shard {shard}: {len(self.sources())} of {len(self.config.enabled_cameras)})" if shard.count > 1 else ""
        )
        log.info("streamd running with %d camera(s)%s", len(self.sources()), of_shard)
        self.notifier.ready(self.health.status_line())
        if self._reload_pending:
            self._reload_soon("SIGHUP")

    def _build_detector(self) -> Detector | None:
        config = self.config
        if config.engine is None:
            log.warning("no `engine` section: frames are ingested and discarded, nothing is detected")
            return None
        engines = create_engines(config.engine, config.batcher.max_batch)
        sinks = build_sinks(config.sinks, self.metrics, self.failures)
        return Detector(
            engines, config.batcher, config.postprocess, sinks, self.metrics, config.engine.warmup, self.failures
        )

    def _nvdec_budget(self, config: StreamsConfig) -> NvdecBudget:
        return budget_for(self._gpu_name, config.nvdec.budget_fps)

    async def stop(self) -> bool:
        """Stop what was started within `shutdown_timeout_s`; True when every part stopped
        cleanly. Safe to call more than once."""
        if not self._stopping:
            self._stopping = True
            self.health.phase = "stopping"
            self.notifier.stopping()
        clean = await self.lifecycle.unwind(self.shutdown_timeout_s)
        self.notifier.close()
        log.info("streamd stopped" if clean else "streamd stopped, but not every part in time (see above)")
        return clean

    async def _stop_listener(self, _timeout: float) -> bool:
        await run_in_thread(self.http.stop, name="http-stop")
        return True

    def request_stop(self) -> None:
        """Stop as SIGTERM does (for a daemon embedded in another program, and for tests)."""
        self._stop_requested.set()

    def _on_stop_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping (a second signal exits at once)")
            self.request_stop()
        else:
            log.warning("second stop signal: exiting without finishing")
            os._exit(1)

    def _on_reload_signal(self) -> None:
        if self._stopping or self._stop_requested.is_set():
            log.info("SIGHUP ignored: stopping")
        elif self.health.phase != "running":
            log.info("SIGHUP while starting: the configuration is read again once running")
            self._reload_pending = True
        else:
            self._reload_soon("SIGHUP")

    async def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        if self.early_signals.stop_requested:
            self._on_stop_signal()  # it came while streamd was still importing and reading its file
        starting = asyncio.create_task(self.start(), name="start")
        stop_requested = asyncio.create_task(self._stop_requested.wait(), name="stop-requested")
        try:
            await asyncio.wait({starting, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                log.info("stop requested while starting: start abandoned")
                with contextlib.suppress(asyncio.CancelledError):
                    starting.cancel()
                    await starting
            else:
                starting.result()  # a failed start raises here, after the stack has unwound
                await stop_requested
                log.info("shutting down")
        finally:
            stop_requested.cancel()
            clean = await self.stop()
            for signum in (*STOP_SIGNALS, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            ignore_from_now_on()
        return 0 if clean else 1

    # -- reload ------------------------------------------------------------------------

    def _reload_soon(self, trigger: str) -> None:
        if self._reload is not None:
            self._reload.spawn(trigger)

    async def reload(self, trigger: str) -> str:
        """Re-read the config file and apply it; returns the result label."""
        if self._reload is None or self.supervisor is None or self._stopping:
            return "unchanged"
        return await self._reload.reload(trigger)

    async def _apply_config(self, applied: StreamsConfig, sha256: str) -> str:
        """Make the running daemon match `applied` (its restart sections already kept)."""
        assert self.supervisor is not None
        if applied.postprocess != self.config.postprocess and self.detector is not None:
            self.detector.update_postprocess(applied.postprocess)
        if self.placement.budget is not None:
            self.placement.set_budget(self._nvdec_budget(applied), self.sources())
        diff = await self.supervisor.apply(applied)
        self.config, self.config_sha256 = applied, sha256
        self.metrics.loaded_config(str(self.config_path), sha256)
        self.metrics.running_shard(applied.shard)
        return (
            f"{len(diff.added)} camera(s) added, {len(diff.removed)} removed, {len(diff.changed)} changed, "
            f"{len(diff.unchanged)} untouched"
        )
