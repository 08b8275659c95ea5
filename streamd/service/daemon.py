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
removed or restarted, untouched ones keep streaming; `postprocess`, `tracking` (open
tracks end, reason `reload`), `health`, `overload` and `nvdec` apply at once;
`metrics`, `engine`, `batcher` and `sinks` need a restart and are reported, not
applied. Once stopping, reloads are ignored.

Shutdown (SIGTERM/SIGINT): STOPPING=1, then the stack unwinds within one deadline
(`shutdown_timeout_s`) shared out by phase: the background loops, the cameras (a camera
stuck connecting is left behind at the end of its share), the detector (engine drain),
the sinks (flush; these two have the largest shares, and whatever the earlier phases did
not use), the listener. Exit 0 when every phase finished; 1 when one did not (records may be missing).
A second signal while stopping exits at once (1); a signal after a clean stop is ignored.
Signal handlers only set flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streamd.analysis.assembly import assemble_detector
from streamd.analysis.detector import Detector
from streamd.analysis.discard import DiscardingConsumer
from streamd.analysis.snapshots import Snapshot
from streamd.base.failures import Failures
from streamd.base.threads import run_in_thread
from streamd.camera.nvdec import nvdec_unavailable_reason
from streamd.camera.placement import DecoderPlacement
from streamd.camera.source import CameraSource
from streamd.camera.state import CameraState
from streamd.config.loader import LoadedConfig
from streamd.config.schema import Overrides, StreamsConfig
from streamd.gpu.context import share_primary_context
from streamd.gpu.nvdec_budget import NvdecBudget, budget_for, gpu_name
from streamd.metrics.gpu import GpuCollector
from streamd.metrics.registry import Metrics
from streamd.monitor.health import Health, Phase
from streamd.monitor.http_server import MetricsServer
from streamd.monitor.overload import OverloadGovernor
from streamd.monitor.rates import RateClock, Rates
from streamd.monitor.systemd import Notifier
from streamd.service.cameras import AnalysisStage, Supervisor
from streamd.service.lifecycle import Lifecycle
from streamd.service.reload import ConfigReload
from streamd.service.signals import STOP_SIGNALS, EarlySignals, ignore_from_now_on
from streamd.sinks.factory import build_sinks
from streamd.sinks.outputs import Outputs

log = logging.getLogger(__name__)

Record = dict[str, Any]

# Shares of the stop deadline. The detector's and the sinks' are the largest: the engine
# drain and the sink flush are where records are lost if time runs out.
_SHARE_LOOPS = 0.02
_SHARE_CAMERAS = 0.2
_SHARE_DETECTOR = 0.35
_SHARE_SINKS = 0.35
_SHARE_LISTENER = 0.05


@dataclass(frozen=True)
class DaemonOptions:
    """How this daemon runs, beside what its configuration says."""

    overrides: Overrides = field(default_factory=Overrides)
    """`streamd run`'s options: they apply over the file now and on every reload."""
    metrics_port: int | None = None
    """Listen on this port instead of `metrics.listen`'s (0: any free one; tests, embedding)."""
    rate_log_interval_s: float = 10.0
    shutdown_timeout_s: float = 30.0
    watch_config: bool = True
    """Apply edits of the file once they settle (SIGHUP reloads either way)."""
    consumer: AnalysisStage | None = None
    """What takes the sampled frames instead of the detector the `engine` section
    describes: a Detector built elsewhere, or another stage (tests, benchmarks)."""
    notifier: Notifier | None = None
    early_signals: EarlySignals | None = None
    """Stop signals that came while streamd was still importing and reading its file."""


class Daemon:
    def __init__(self, loaded: LoadedConfig, options: DaemonOptions | None = None) -> None:
        self.options = options = options or DaemonOptions()
        self.loaded = replace(loaded, config=options.overrides.apply(loaded.config))
        config = self.loaded.config
        self.metrics = Metrics()
        self.failures = Failures(lambda component: self.metrics.component_failures.labels(component).inc())
        self.consumer = options.consumer
        self.detector: Detector[Outputs] | None = options.consumer if isinstance(options.consumer, Detector) else None
        self.supervisor: Supervisor | None = None
        self.notifier = options.notifier or Notifier()
        self.phase = Phase.starting
        self.rates = RateClock(self.sources, options.rate_log_interval_s, self._analysed, self.failures)
        self.placement = DecoderPlacement(None, self.metrics.nvdec_planned)
        self.rates.listen(self._measured_decoding)
        self.rates.listen(self._publish_states)
        self.rates.listen(self._expire_tracks)
        self._gpu_name: str | None = None
        self.health = Health(self, self.sources, self.rates, self.metrics, self.notifier, self.failures, self.placement)
        self.overload = OverloadGovernor(lambda: self.config.overload, self.sources, self.metrics)
        self.rates.listen(self.overload.on_rates)
        self.http = MetricsServer(
            config.metrics.host,
            config.metrics.port if options.metrics_port is None else options.metrics_port,
            self.metrics.registry,
            health=self.health,
            web_config=Path(config.metrics.web_config) if config.metrics.web_config else None,
            pictures=config.metrics.pictures,
        )
        self.lifecycle = Lifecycle()
        self._stop_requested = asyncio.Event()
        self._signals = 0
        self._reload_pending = False
        self._reload = (
            None
            if self.loaded.path is None
            else ConfigReload(
                self.loaded.path,
                lambda: self.loaded,
                self._apply_config,
                options.overrides,
                self.metrics,
                self.failures,
            )
        )

    @property
    def config(self) -> StreamsConfig:
        """The configuration in force (the file's, with the options over it)."""
        return self.loaded.config

    # -- what health reads -------------------------------------------------------------

    def engine_stuck_s(self) -> float:
        return self.detector.engine_stuck_s() if self.detector is not None else 0.0

    def problems(self) -> list[str]:
        if self.detector is None:
            return []
        tracking = self.detector.tracking
        recognition = tracking.recognition if tracking is not None else None
        problem = recognition.problem() if recognition is not None else None
        return self.detector.outputs.problems() + self.detector.runner.problems() + ([problem] if problem else [])

    def engine_status(self) -> dict[str, Any] | None:
        if self.detector is None:
            return None
        runner, sizing = self.detector.runner, self.detector.sizing
        chosen = sizing.chosen if sizing is not None else None
        return {
            "backend": runner.engine.name,
            "instances_in_rotation": len(runner.engines) - len(runner.retired),
            "settings": [choice.as_dict() for choice in (chosen.all() if chosen is not None else [])],
        }

    def snapshot(self, camera_id: str) -> Snapshot | None:
        return self.detector.snapshots.latest(camera_id) if self.detector is not None else None

    def tracks_of(self, camera_id: str) -> dict[str, Any] | None:
        tracking = self.detector.tracking if self.detector is not None else None
        if tracking is None or not tracking.settings.enabled:
            return None
        return {"active": tracking.active(camera_id), "best_faces": tracking.crops.recent(camera_id)}

    def best_face(self, camera_id: str, track: int) -> bytes | None:
        tracking = self.detector.tracking if self.detector is not None else None
        return tracking.crops.best_face(camera_id, track) if tracking is not None else None

    def sources(self) -> list[CameraSource]:
        return self.supervisor.sources() if self.supervisor else []

    def _measured_decoding(self, _last_second: Mapping[str, Rates], _now: float) -> None:
        """The NVDEC plan follows what each camera costs, over the rate window."""
        self.placement.measured(self.sources(), {cid: rates.decoded_fps for cid, rates in self.rates.rates.items()})

    def _publish_states(self, _last_second: Mapping[str, Rates], _now: float) -> None:
        if self.detector is not None:
            self.detector.outputs.camera_states({s.camera_id: s.state.value for s in self.sources()})

    def _expire_tracks(self, _last_second: Mapping[str, Rates], _now: float) -> None:
        """Tracks of cameras that send no frames (down, reconnecting) end in time too."""
        if self.detector is not None and self.detector.tracking is not None:
            self.detector.tracking.expire(time.monotonic())

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
        if self.loaded.path is not None:
            self.metrics.loaded_config(str(self.loaded.path), self.loaded.sha256)
        self.metrics.running_shard(self.config.shard)
        if self.consumer is None:
            # Loading a model takes seconds: off the event loop.
            self.detector = await run_in_thread(self._build_detector, name="engine-load")
            self.consumer = self.detector or DiscardingConsumer()
        if self.detector is not None:
            self.metrics.engine_busy.set_function(self.detector.engine_stuck_s)
            self.detector.outputs.start()
            lifecycle.started("sinks", self.detector.outputs.stop, _SHARE_SINKS)
        assert self.consumer is not None
        await self.consumer.start()
        if self.detector is not None:
            lifecycle.started("detector", self.consumer.stop, _SHARE_DETECTOR)
        else:  # no sinks behind it: the same part of the deadline as a detector with its sinks
            lifecycle.started("frame consumer", self.consumer.stop, _SHARE_DETECTOR + _SHARE_SINKS)
        self.supervisor = supervisor = Supervisor(self.metrics, self.consumer, self.failures, self.placement)
        lifecycle.started("cameras", supervisor.stop, _SHARE_CAMERAS)
        self.metrics.watch_cameras(self.sources, [state.value for state in CameraState], CameraState.streaming.value)
        await supervisor.apply(self.config)
        for name, part in (("rate clock", self.rates), ("health", self.health)):
            part.start()
            lifecycle.started(name, part.stop, _SHARE_LOOPS)
        if self._reload is not None:
            if self.options.watch_config:
                self._reload.start_watching()
            lifecycle.started("config reload", self._reload.stop, _SHARE_LOOPS)
        self.phase = Phase.running
        shard = self.config.this_shard
        of_shard = (
            f" (shard {shard}: {len(self.sources())} of {len(self.config.enabled_cameras)})" if shard.count > 1 else ""
        )
        log.info("streamd running with %d camera(s)%s", len(self.sources()), of_shard)
        self.notifier.ready(self.health.status_line())
        if self._reload_pending:
            self._reload_soon("SIGHUP")

    def _build_detector(self) -> Detector[Outputs] | None:
        config = self.config
        if config.engine is None:
            log.warning("no `engine` section: frames are ingested and discarded, nothing is detected")
            return None
        outputs = Outputs(build_sinks(config.sinks, self.metrics, self.failures))
        cameras = len(config.cameras_to_run)
        return assemble_detector(config, config.engine, outputs, self.metrics, self.failures, cameras)

    def _nvdec_budget(self, config: StreamsConfig) -> NvdecBudget:
        return budget_for(self._gpu_name, config.nvdec.budget_fps)

    async def stop(self) -> bool:
        """Stop what was started within `shutdown_timeout_s`; True when every part stopped
        cleanly. Safe to call more than once."""
        if self.phase is not Phase.stopping:
            self.phase = Phase.stopping
            self.notifier.stopping()
        clean = await self.lifecycle.unwind(self.options.shutdown_timeout_s)
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
        if self.phase is Phase.stopping or self._stop_requested.is_set():
            log.info("SIGHUP ignored: stopping")
        elif self.phase is Phase.starting:
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
        if self.options.early_signals is not None and self.options.early_signals.stop_requested:
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
        if self._reload is None or self.supervisor is None or self.phase is Phase.stopping:
            return "unchanged"
        return await self._reload.reload(trigger)

    async def _apply_config(self, loaded: LoadedConfig) -> str:
        """Make the running daemon match `loaded` (its restart sections already kept)."""
        assert self.supervisor is not None
        applied = loaded.config
        if applied.postprocess != self.config.postprocess and self.detector is not None:
            self.detector.update_postprocess(applied.postprocess)
        tracking = self.detector.tracking if self.detector is not None else None
        if tracking is not None:
            await run_in_thread(lambda: tracking.update(applied.tracking), name="tracking-reload")
        if self.placement.budget is not None:
            self.placement.set_budget(self._nvdec_budget(applied), self.sources())
        diff = await self.supervisor.apply(applied)
        self.loaded = loaded
        self.metrics.loaded_config(str(loaded.path), loaded.sha256)
        self.metrics.running_shard(applied.shard)
        return (
            f"{len(diff.added)} camera(s) added, {len(diff.removed)} removed, {len(diff.changed)} changed, "
            f"{len(diff.unchanged)} untouched"
        )
