"""The daemon: wires configuration, cameras, the frame consumer and metrics together.

Start-up: metrics listener first (so a scrape sees cameras starting), then the engine
(loaded in a thread, warmed up), then cameras, then READY=1 to systemd.

Reload (the file changed and then stood still for `reload.settle_s`, or SIGHUP): the
new file is read and validated off the loop; an invalid one is rejected with every error
logged and the running set untouched. Nothing stops the watching: a failed reload is
counted as rejected and the next edit is read as usual. A
valid one is applied as a diff: cameras are added, removed or restarted, untouched
ones keep streaming; `postprocess` and `health` apply at once; `metrics`, `engine`,
`batcher` and `sinks` need a restart and are reported, not applied.

Shutdown (SIGTERM/SIGINT), in phases, bounded as a whole: STOPPING=1, stop watching,
stop the cameras, let the detector finish what the engine holds and flush the sinks,
close the listener. A second signal exits at once. Signal handlers only set flags.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from streamd.camera.source import CameraSource
from streamd.config import ConfigError, StreamsConfig, read_config
from streamd.consumers import DiscardingConsumer
from streamd.detector import Detector
from streamd.engine.factory import create_engines
from streamd.gpu_metrics import GpuCollector
from streamd.http_server import MetricsServer
from streamd.metrics import Metrics
from streamd.rate_log import RateLogger
from streamd.redact import redact_url
from streamd.sinks.factory import build_sinks
from streamd.supervision import Failures
from streamd.supervisor import FrameConsumer, Supervisor
from streamd.systemd import Notifier
from streamd.tasks import cancel_and_wait
from streamd.threads import run_in_thread

log = logging.getLogger(__name__)

# Sections a running daemon cannot swap safely: they take a restart.
RESTART_SECTIONS = ("metrics", "engine", "batcher", "sinks")
# How often the health loop wakes: event-loop lag probe, watchdog and STATUS.
_TICK_S = 1.0
# Pause before watching the configuration again after the watch itself failed.
_REWATCH_S = 5.0


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is written or replaced: inode, size, modification time."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class Daemon:
    def __init__(
        self,
        config: StreamsConfig,
        config_path: Path | None = None,
        config_sha256: str = "",
        consumer: FrameConsumer | None = None,
        metrics_port: int | None = None,
        rate_log_interval_s: float = 10.0,
        notifier: Notifier | None = None,
        shutdown_timeout_s: float = 30.0,
        watch_config: bool = True,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.config_sha256 = config_sha256
        self.metrics = Metrics()
        self.failures = Failures(lambda component: self.metrics.component_failures.labels(component).inc())
        self.consumer = consumer
        self.supervisor: Supervisor | None = None
        self.notifier = notifier or Notifier()
        self.shutdown_timeout_s = shutdown_timeout_s
        self.watch_config = watch_config and config_path is not None
        self.http = MetricsServer(
            config.metrics.host,
            config.metrics.port if metrics_port is None else metrics_port,
            self.metrics.registry,
            health=self,
        )
        self.rate_log = RateLogger(self.sources, rate_log_interval_s, self._analysed, self.failures)
        self._stop_requested = asyncio.Event()
        self._signals = 0
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._engine_stuck_logged = False

    def sources(self) -> list[CameraSource]:
        return self.supervisor.sources() if self.supervisor else []

    def _analysed(self, camera_id: str) -> int:
        return self.consumer.analysed(camera_id) if self.consumer is not None else 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.http.start()
        gpu = GpuCollector.create()
        if gpu is not None:
            self.metrics.registry.register(gpu)
        if self.config_path is not None:
            self.metrics.loaded_config(str(self.config_path), self.config_sha256)
        if self.consumer is None:
            # Loading a model takes seconds: off the event loop.
            self.consumer = await run_in_thread(self._build_consumer, name="engine-load")
        await self.consumer.start()
        self.supervisor = Supervisor(self.metrics, self.consumer, self.failures)
        self.metrics.watch_cameras(self.sources)
        await self.supervisor.apply(self.config)
        self.rate_log.start()
        self._tasks.append(self.failures.watch(asyncio.create_task(self._health_loop(), name="health"), "health"))
        if self.watch_config:
            watch = asyncio.create_task(self._watch_config(), name="config-watch")
            self._tasks.append(self.failures.watch(watch, "config-watch"))
        self._started = True
        log.info("streamd running with %d camera(s)", len(self.sources()))
        self.notifier.ready(self._status_line())

    def _build_consumer(self) -> FrameConsumer:
        config = self.config
        if config.engine is None:
            log.warning("no `engine` section: frames are ingested and discarded, nothing is detected")
            return DiscardingConsumer()
        engines = create_engines(config.engine, config.batcher.max_batch)
        sinks = build_sinks(config.sinks, self.metrics, self.failures)
        return Detector(
            engines, config.batcher, config.postprocess, sinks, self.metrics, config.engine.warmup, self.failures
        )

    async def stop(self) -> None:
        """Shut down in phases; safe to call more than once."""
        if not self._started:
            self.http.stop()
            return
        self._started = False
        self.notifier.stopping()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        await self.rate_log.stop()
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.consumer is not None:
            await self.consumer.stop()
        self.http.stop()
        self.notifier.close()
        log.info("streamd stopped")

    def request_stop(self) -> None:
        self._stop_requested.set()

    def _on_stop_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping (a second signal exits at once)")
            self._stop_requested.set()
        else:
            log.warning("second stop signal: exiting without finishing")
            os._exit(1)

    async def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn_reload("SIGHUP"))
        try:
            await self.start()
            await self._stop_requested.wait()
            log.info("shutting down")
        finally:
            try:
                await asyncio.wait_for(self.stop(), self.shutdown_timeout_s)
            except TimeoutError:
                log.error("shutdown took longer than %.0fs; exiting anyway", self.shutdown_timeout_s)
                return 1
            finally:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(signum)
        return 0

    # -- reload ------------------------------------------------------------------------

    def _spawn_reload(self, trigger: str) -> None:
        async def reload_once() -> None:
            await self.reload(trigger)

        task = asyncio.create_task(reload_once(), name="reload")
        self._tasks.append(task)
        task.add_done_callback(lambda done: self._tasks.remove(done) if done in self._tasks else None)

    async def reload(self, trigger: str) -> str:
        """Re-read the config file and apply it; returns the result label."""
        if self.config_path is None or self.supervisor is None:
            return "unchanged"
        async with self._reload_lock:
            try:
                return await self._reload_locked(self.config_path, self.supervisor, trigger)
            except Exception:
                # A bug, not a bad file; whatever it was, the next edit must still apply.
                log.exception("reload (%s) failed; /status shows what runs now", trigger)
                return self._reloaded("rejected")

    async def _reload_locked(self, path: Path, supervisor: Supervisor, trigger: str) -> str:
        try:
            new, sha256 = await run_in_thread(lambda: read_config(path), name="config-read")
        except ConfigError as error:
            log.error("reload (%s) rejected; the running configuration stays:", trigger)
            for problem in error.errors:
                log.error("  %s", problem)
            return self._reloaded("rejected")
        if sha256 == self.config_sha256:
            return self._reloaded("unchanged")
        kept = {
            name: getattr(self.config, name)
            for name in RESTART_SECTIONS
            if getattr(new, name) != getattr(self.config, name)
        }
        if new.postprocess != self.config.postprocess and isinstance(self.consumer, Detector):
            self.consumer.update_postprocess(new.postprocess)
        applied = new.model_copy(update=kept)
        diff = await supervisor.apply(applied)
        self.config, self.config_sha256 = applied, sha256
        self.metrics.loaded_config(str(path), sha256)
        log.info(
            "reload (%s): %d camera(s) added, %d removed, %d changed, %d untouched",
            trigger,
            len(diff.added),
            len(diff.removed),
            len(diff.changed),
            len(diff.unchanged),
        )
        if kept:
            log.warning("reload: changes to %s need a restart and were not applied", ", ".join(kept))
            return self._reloaded("restart_needed")
        return self._reloaded("applied")

    def _reloaded(self, result: str) -> str:
        self.metrics.config_reloads.labels(result).inc()
        return result

    async def _watch_config(self) -> None:
        import watchfiles

        assert self.config_path is not None
        directory, name = self.config_path.parent, self.config_path.name
        # The directory, not the file: editors save by writing a new file and renaming
        # it over the old one, which a watch on the old file's inode would miss. The
        # watch itself is restarted if it ever fails: edits must never stop applying.
        while True:
            try:
                async for _ in watchfiles.awatch(
                    directory,
                    watch_filter=lambda _change, changed: Path(changed).name == name,
                    debounce=300,
                    recursive=False,
                ):
                    await self._wait_until_settled(self.config_path)
                    await self.reload("file changed")
            except Exception:
                log.exception("watching %s failed; watching again in %.0fs", self.config_path, _REWATCH_S)
            await asyncio.sleep(_REWATCH_S)

    async def _wait_until_settled(self, path: Path) -> None:
        """Return once `path` has not changed for `reload.settle_s`.

        A writer that pauses mid-save leaves a file that may even validate (the first
        camera of two, a URL cut short); reading only a file that has stood still for the
        settle window keeps such a save from ever being applied.
        """
        previous = _fingerprint(path)
        while True:
            await asyncio.sleep(self.config.reload.settle_s)
            current = _fingerprint(path)
            if current == previous:
                return
            previous = current

    # -- health --------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        ping_every = self.notifier.watchdog_interval_s or 5.0
        tick = min(_TICK_S, ping_every)
        last_ping = 0.0
        while True:
            expected = time.monotonic() + tick
            await asyncio.sleep(tick)
            self.metrics.event_loop_lag.set(max(0.0, time.monotonic() - expected))
            now = time.monotonic()
            if now - last_ping >= ping_every:
                last_ping = now
                if self._pipeline_healthy():
                    self.notifier.watchdog()
                self.notifier.status(self._status_line())

    def _pipeline_healthy(self) -> bool:
        """False when a component crashed or the engine is stuck. Cameras being down is
        not the daemon's fault: a restart would not bring them back."""
        if self.failures.failed:
            return False
        stuck = self.consumer.engine_stuck_s() if self.consumer is not None else 0.0
        if stuck > self.config.health.engine_stuck_s:
            if not self._engine_stuck_logged:
                log.error("engine stuck: a batch has been running for %.0fs; watchdog pings stopped", stuck)
                self._engine_stuck_logged = True
            return False
        self._engine_stuck_logged = False
        return True

    def _status_line(self) -> str:
        sources = self.sources()
        streaming = sum(1 for s in sources if s.state == "streaming")
        return (
            f"{streaming}/{len(sources)} cameras streaming, {self.rate_log.analysed_fps_total():.1f} frames/s analysed"
        )

    def ready(self) -> tuple[bool, str]:
        """Engine loaded and at least `health.ready_share` of the cameras streaming."""
        if not self._started:
            return False, "starting"
        if self.failures.failed:
            return False, f"not ready: {self.failures.describe()}"
        sources = self.sources()
        streaming = sum(1 for s in sources if s.state == "streaming")
        share = streaming / len(sources) if sources else 1.0
        ready = share >= self.config.health.ready_share
        return ready, f"{'ready' if ready else 'not ready'}: {streaming}/{len(sources)} cameras streaming"

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        cameras = []
        for source in self.sources():
            rates = self.rate_log.rates.get(source.camera_id)
            last = source.last_frame_mono
            cameras.append(
                {
                    "id": source.camera_id,
                    "url": redact_url(source.camera.url),
                    "state": source.state,
                    "reason": source.reason,
                    "message": source.message,
                    "decoder": source.decoder,
                    "fps_target": source.camera.fps,
                    "decoded_fps": rates.decoded_fps if rates else None,
                    "sampled_fps": rates.sampled_fps if rates else None,
                    "analysed_fps": rates.analysed_fps if rates else None,
                    "last_frame_age_s": None if last is None else round(now - last, 3),
                    "reconnects": source.metrics.reconnects,
                }
            )
        ready, why = self.ready()
        return {
            "ready": ready,
            "summary": why,
            "config": {"path": str(self.config_path) if self.config_path else None, "sha256": self.config_sha256},
            "cameras": cameras,
        }
