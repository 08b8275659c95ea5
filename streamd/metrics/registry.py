"""Prometheus metrics: the names here are the contract dashboards and alerts use.

Counters live in one registry per daemon (tests run several daemons in one process).
Per-camera state is not pushed into gauges: a collector reads it from the cameras at
scrape time, so a removed camera simply stops being reported, and the last frame age
is always current.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamd.metrics.analysis import CameraAnalysis, StageSeconds

# `*_created` series double the output and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class CameraStatusView(Protocol):
    """What the scrape-time collector reads from each camera."""

    @property
    def camera_id(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def last_frame_mono(self) -> float | None: ...

    @property
    def decoder(self) -> str: ...

    @property
    def target_fps(self) -> float: ...

    @property
    def sampling_fps(self) -> float: ...

    @property
    def decode_lag_s(self) -> float | None: ...


class CameraMetrics:
    """One camera's counters: the Prometheus children plus plain totals for status and logs.

    Written only by that camera's decode thread and its task; the children are resolved
    once because label lookups are not free at 25 frames/s times 70 cameras.
    """

    def __init__(self, metrics: Metrics, camera_id: str) -> None:
        self._decoded = metrics.frames_decoded.labels(camera_id)
        self._sampled = metrics.frames_sampled.labels(camera_id)
        self._replaced = metrics.frames_dropped.labels(camera_id, "replaced")
        self._decode_errors = metrics.decode_errors.labels(camera_id)
        self._reconnects = metrics.reconnects.labels(camera_id)
        self._errors = metrics.camera_errors
        self.camera_id = camera_id
        self.decoded = self.sampled = self.replaced = self.reconnects = 0

    def frame_decoded(self) -> None:
        self.decoded += 1
        self._decoded.inc()

    def frame_sampled(self) -> None:
        self.sampled += 1
        self._sampled.inc()

    def frame_replaced(self) -> None:
        self.replaced += 1
        self._replaced.inc()

    def decode_error(self) -> None:
        self._decode_errors.inc()

    def reconnecting(self) -> None:
        self.reconnects += 1
        self._reconnects.inc()

    def connection_failed(self, reason: str) -> None:
        self._errors.labels(self.camera_id, reason).inc()


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            # The default collectors already sit in the global registry; a daemon's own
            # registry takes the same ones by reference.
            self.registry.register(collector)
        self.frames_decoded = Counter(
            "streamd_frames_decoded", "Frames decoded from the camera's stream.", ["camera"], registry=self.registry
        )
        self.frames_sampled = Counter(
            "streamd_frames_sampled",
            "Frames taken for analysis at the camera's fps.",
            ["camera"],
            registry=self.registry,
        )
        self.component_failures = Counter(
            "streamd_component_failures",
            "Crashes of background tasks and threads, by component; any makes /readyz 503 and stops the watchdog.",
            ["component"],
            registry=self.registry,
        )
        self.frames_dropped = Counter(
            "streamd_frames_dropped",
            "Sampled frames never analysed, by reason (replaced: a newer frame took its slot).",
            ["camera", "reason"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "streamd_reconnects", "Connection attempts after the first one.", ["camera"], registry=self.registry
        )
        self.decode_errors = Counter(
            "streamd_decode_errors", "Packets that failed to decode.", ["camera"], registry=self.registry
        )
        self.camera_errors = Counter(
            "streamd_camera_errors",
            "Connections that ended in an error, by reason (unauthorized, not_found, stalled...).",
            ["camera", "reason"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "streamd_batch_size",
            "Frames per engine batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "streamd_inference_seconds",
            "Engine time per batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        # The detector's per-frame series, fed a batch at a time (streamd.metrics.analysis).
        self.analysis = CameraAnalysis()
        self.stage_seconds = StageSeconds()
        self.registry.register(self.analysis)
        self.registry.register(self.stage_seconds)
        self.sink_records = Counter(
            "streamd_sink_records", "Records written by a sink.", ["sink"], registry=self.registry
        )
        self.sink_up = Gauge(
            "streamd_sink_up",
            "1 while the sink writes, 0 while its writes fail (records are dropped, reason=write_error).",
            ["sink"],
            registry=self.registry,
        )
        self.sink_dropped = Counter(
            "streamd_sink_dropped",
            "Records a sink lost, by reason (queue_full: it fell behind; write_error).",
            ["sink", "reason"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "streamd_config_reloads",
            "Reloads of streams.yaml, by result (applied, unchanged, rejected, restart_needed).",
            ["result"],
            registry=self.registry,
        )
        # Every result at 0 from the start: `increase()` and alerts see a series, not nothing.
        for result in ("applied", "unchanged", "rejected", "restart_needed"):
            self.config_reloads.labels(result)
        self.config_info = Gauge(
            "streamd_config_info",
            "The loaded streams.yaml: its path and SHA-256.",
            ["path", "sha256"],
            registry=self.registry,
        )
        self._versions = _build_versions()
        self.build_info = Gauge(
            "streamd_build_info",
            "Versions of streamd and what it runs on, and the shard I/N of the cameras it runs.",
            [*self._versions, "shard"],
            registry=self.registry,
        )
        self.running_shard("0/1")
        self.engine_busy = Gauge(
            "streamd_engine_busy_seconds",
            "How long the oldest batch still in the engine has been there (0 when none); "
            "past health.engine_stuck_s the engine counts as stuck.",
            registry=self.registry,
        )
        self.engine_instances = Gauge(
            "streamd_engine_instances",
            "Engine instances in rotation (one out of rotation after failing batch after batch).",
            registry=self.registry,
        )
        self.engine_batch_limit = Gauge(
            "streamd_engine_batch_limit",
            "Frames an engine instance runs at once: its batch, halved each time memory ran out.",
            ["instance"],
            registry=self.registry,
        )
        self.engine_out_of_memory = Counter(
            "streamd_engine_out_of_memory",
            "Batches an engine instance ran out of memory on (each halved its batch limit; none lost a frame).",
            ["instance"],
            registry=self.registry,
        )
        self.overload = Gauge(
            "streamd_overload",
            "1 while more than 5% of the sampled frames are not analysed (the engine cannot keep up).",
            registry=self.registry,
        )
        self.event_loop_lag = Gauge(
            "streamd_event_loop_lag_seconds",
            "How late the event loop ran a timer, last check.",
            registry=self.registry,
        )
        # Registered at the first NVDEC plan: without NVDEC the series are absent, not 0.
        self.nvdec_budget = Gauge(
            "streamd_nvdec_budget_fps", "1080p-equivalent frames/s the GPU's NVDEC may decode.", registry=None
        )
        self.nvdec_placed = Gauge(
            "streamd_nvdec_planned_fps",
            "1080p-equivalent frames/s of the cameras placed on NVDEC (estimated until measured).",
            registry=None,
        )
        self.tracks_active = Gauge(
            "streamd_tracks_active", "Confirmed tracks open now, per camera.", ["camera"], registry=self.registry
        )
        self.track_events = Counter(
            "streamd_track_events",
            "Track events made (track_started, track_ended), per camera.",
            ["camera", "event"],
            registry=self.registry,
        )
        self.crops_lost = Counter(
            "streamd_crops_lost",
            "Best-face crops not written (queue_full, write_error, shutdown); their events went on without them.",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("queue_full", "write_error", "shutdown"):
            self.crops_lost.labels(reason)
        # Names are never labels: biometric identities stay out of the metrics.
        self.identifications = Counter(
            "streamd_identifications",
            "Faces the second stage answered, per camera: known (in the gallery) or unknown.",
            ["camera", "result"],
            registry=self.registry,
        )
        self.gallery_people = Gauge(
            "streamd_gallery_people",
            "People enrolled in the gallery the second stage matches against.",
            registry=self.registry,
        )
        self.recognition_dropped = Counter(
            "streamd_recognition_dropped",
            "Face crops the second stage did not answer: queue_full (behind), error (the embedder failed).",
            ["camera", "reason"],
            registry=self.registry,
        )
        self.recognition_seconds = Histogram(
            "streamd_recognition_seconds",
            "From a face crop queued to its identity.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.recognition_batch_size = Histogram(
            "streamd_recognition_batch_size",
            "Face crops per embedder batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self._nvdec_registered = False
        self._per_camera = (
            self.frames_decoded,
            self.frames_sampled,
            self.frames_dropped,
            self.reconnects,
            self.decode_errors,
            self.camera_errors,
            self.tracks_active,
            self.track_events,
            self.identifications,
            self.recognition_dropped,
        )

    def camera(self, camera_id: str) -> CameraMetrics:
        return CameraMetrics(self, camera_id)

    def forget_camera(self, camera_id: str) -> None:
        """Drop every series of a camera that was removed from the configuration."""
        self.analysis.forget(camera_id)
        for metric in self._per_camera:
            for labels in _label_sets(metric):
                if labels and labels[0] == camera_id:
                    metric.remove(*labels)

    def watch_cameras(
        self, cameras: Callable[[], Iterable[CameraStatusView]], states: Sequence[str], up_state: str
    ) -> None:
        """Report `cameras` at every scrape; `states`: every state a camera can be in (one
        series each), `up_state` the one `streamd_camera_up` is 1 in."""
        self.registry.register(_CameraStateCollector(cameras, tuple(states), up_state))

    def nvdec_planned(self, budget_fps: float, planned_fps: float) -> None:
        if not self._nvdec_registered:
            self._nvdec_registered = True
            self.registry.register(self.nvdec_budget)
            self.registry.register(self.nvdec_placed)
        self.nvdec_budget.set(budget_fps)
        self.nvdec_placed.set(planned_fps)

    def running_shard(self, shard: str) -> None:
        self.build_info.clear()
        self.build_info.labels(**self._versions, shard=shard).set(1)

    def loaded_config(self, path: str, sha256: str) -> None:
        self.config_info.clear()
        self.config_info.labels(path, sha256).set(1)


def _build_versions() -> dict[str, str]:
    import platform

    import av

    from streamd import __version__

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "none"
    return {
        "version": __version__,
        "python": platform.python_version(),
        "pyav": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "onnxruntime": ort_version,
    }


def _label_sets(metric: Counter | Gauge | Histogram) -> list[tuple[str, ...]]:
    # prometheus_client has no public listing of a metric's children.
    with metric._lock:
        return [tuple(labels) for labels in metric._metrics]


class _CameraStateCollector(Collector):
    def __init__(self, cameras: Callable[[], Iterable[CameraStatusView]], states: tuple[str, ...], up_state: str):
        self._cameras = cameras
        self._states, self._up_state = states, up_state

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("streamd_camera_up", "1 while the camera is streaming.", labels=["camera"])
        state = GaugeMetricFamily(
            "streamd_camera_state", "1 for the camera's current state, 0 for the others.", labels=["camera", "state"]
        )
        age = GaugeMetricFamily(
            "streamd_last_frame_age_seconds", "Seconds since the camera's last decoded frame.", labels=["camera"]
        )
        decoder = GaugeMetricFamily(
            "streamd_decoder_info",
            "1 for the decoder the camera uses now (nvdec or cpu).",
            labels=["camera", "decoder"],
        )
        target = GaugeMetricFamily(
            "streamd_camera_target_fps", "The camera's configured analysis rate (`fps`).", labels=["camera"]
        )
        sampling = GaugeMetricFamily(
            "streamd_sampling_fps",
            "The rate the camera is sampled at now: its fps, unless overload.degrade lowered it.",
            labels=["camera"],
        )
        lag = GaugeMetricFamily(
            "streamd_decode_lag_seconds",
            "Capture (the camera's clock, from RTCP) to decode, last sampled frame; absent where the stream "
            "does not say when it captured. Growing: the decoder falls behind.",
            labels=["camera"],
        )
        now = time.monotonic()
        for camera in self._cameras():
            up.add_metric([camera.camera_id], 1.0 if camera.state == self._up_state else 0.0)
            for name in self._states:
                state.add_metric([camera.camera_id, name], 1.0 if camera.state == name else 0.0)
            if camera.last_frame_mono is not None:
                age.add_metric([camera.camera_id], now - camera.last_frame_mono)
            decoder.add_metric([camera.camera_id, camera.decoder], 1.0)
            target.add_metric([camera.camera_id], camera.target_fps)
            sampling.add_metric([camera.camera_id], camera.sampling_fps)
            if camera.decode_lag_s is not None:
                lag.add_metric([camera.camera_id], camera.decode_lag_s)
        yield from (up, state, age, decoder, target, sampling, lag)

    def describe(self) -> Iterator[Metric]:
        return iter(())
