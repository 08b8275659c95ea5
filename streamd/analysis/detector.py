"""Detector: the frame consumer that turns sampled frames into detection records.

Wiring only; each part does its own job:
- `convert` letterboxes sampled frames in the cameras' decode threads (libswscale);
- the DynamicBatcher (event loop) forms batches from the cameras' slots;
- the EngineRunner (its own threads) assembles, infers, and hands results back;
- postprocess and record building run in the runner's deliver thread;
- tracking (`streamd.tracks`) gives each face its track and makes the track events;
- the sinks (`Outputs`) get each record without blocking (full queues drop and count).

Record schema (one per analysed frame; docs/contracts.md):
`camera, seq, frame_pts, captured_at, result_at, latency_s, width, height, faces`,
each face `{box: [x1, y1, x2, y2], score, landmarks: [[x, y] x 5], track}` in the
camera's pixels (`track` while tracking is on). Track events: docs/contracts.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import av
import numpy as np

from streamd.analysis.batcher import BatchPolicy, DynamicBatcher
from streamd.analysis.postprocess import PostprocessSettings, postprocess, postprocess_batch
from streamd.analysis.snapshots import Snapshots
from streamd.base.failures import Failures
from streamd.base.threads import run_in_thread
from streamd.camera.slot import LatestFrameSlot
from streamd.camera.state import Detached
from streamd.config.schema import BatcherConfig, PostprocessConfig
from streamd.engine.base import Engine
from streamd.engine.runner import BatchResult, EngineRunner
from streamd.engine.sizing import EngineSizing
from streamd.frames.frame import Frame
from streamd.frames.letterbox import Letterbox, letterbox
from streamd.metrics.registry import Metrics
from streamd.tracks.tracking import Tracking

log = logging.getLogger(__name__)


class RecordsOut(Protocol):
    """Where records and events go: the daemon's sinks, or recorded video's files."""

    def offer_many(self, records: list[dict[str, Any]]) -> None: ...


Out = TypeVar("Out", bound=RecordsOut)


class Detector(Generic[Out]):
    def __init__(
        self,
        engines: list[Engine],
        batcher: BatcherConfig,
        post: PostprocessConfig,
        outputs: Out,
        metrics: Metrics,
        warmup: bool = True,
        failures: Failures | None = None,
        tracking: Tracking | None = None,
        sizing: EngineSizing | None = None,
    ) -> None:
        """`tracking`: faces get tracks and tracks become events (None: records only);
        `sizing`: how `auto` sized the engines (their measured cost is kept there)."""
        self.engine = engine = engines[0]
        self.outputs = outputs
        self.tracking = tracking
        self.metrics = metrics
        self.warmup = warmup
        self.settings = PostprocessSettings.of(post)
        self.failures = failures or Failures()
        self.sizing = sizing
        fit = sizing is not None and sizing.instances_auto
        self.runner = EngineRunner(
            engines, self._deliver, self._room_freed, self._engine_failed, self.failures, metrics, fit
        )
        most = engine.max_batch if batcher.max_batch == "auto" else min(batcher.max_batch, engine.max_batch)
        policy = BatchPolicy(most, batcher.max_delay_ms / 1000, batcher.max_age_ms / 1000)
        self.batcher = DynamicBatcher(policy, self.runner, self._stale, failures=self.failures)
        self.inferred = 0
        # Written by the deliver thread, attached and detached from the loop.
        self.inferred_by_camera: dict[str, int] = {}
        self.dropped_by_camera: dict[str, int] = {}
        # Camera -> its row of the per-camera series (metrics.analysis).
        self._series: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        self._postprocess_failure_logged = False
        self.snapshots = Snapshots()
        # NVDEC frames are letterboxed on the GPU when the engine reads GPU memory and the
        # kernel can run; otherwise each sampled frame is downloaded and letterboxed here.
        self._gpu_letterbox = _gpu_letterbox() if engine.on_gpu else None

    def convert(self, frame: av.VideoFrame) -> tuple[Any, Letterbox | None]:
        if self._gpu_letterbox is not None and frame.format.name == "cuda":
            on_gpu: tuple[Any, Letterbox] = self._gpu_letterbox.letterbox_frame(
                frame, self.engine.input_width, self.engine.input_height
            )
            return on_gpu
        return letterbox(frame, self.engine.input_width, self.engine.input_height)

    def keeps_pictures(self) -> bool:
        """Only for best-face crops: a held picture holds a frame of the decoder's pool."""
        tracking = self.tracking
        if tracking is None or not tracking.settings.enabled:
            return False
        return tracking.settings.crops.enabled or tracking.recognition is not None

    async def start(self) -> None:
        if self.warmup:
            seconds = await run_in_thread(self.runner.warm_up, name="engine-warmup")
            log.info("engine warm: batch of %d in %.0f ms", self.engine.max_batch, seconds * 1000)
            if self.sizing is not None:
                if self.runner.cost is not None:
                    self.sizing.remember(self.runner.cost)
                self.sizing.fitted(len(self.runner.engines))
        if self.tracking is not None:
            self.tracking.start()
        self.runner.start()
        self.batcher.start()

    async def stop(self, timeout: float = 30.0) -> bool:
        """Stop batching, finish what the engine holds and hand it to the sinks, within
        `timeout`. False when the engine did not finish in time: records may be missing."""
        deadline = time.monotonic() + timeout
        await self.batcher.stop()
        drained = await run_in_thread(lambda: self.runner.stop(timeout * 0.7), name="engine-stop")
        tracking = self.tracking
        if tracking is not None:  # the open tracks end, their crops written, their events handed on
            left = max(0.0, deadline - time.monotonic())
            drained = await run_in_thread(lambda: tracking.stop(left), name="tracks-stop") and drained
        events = f" (and {tracking.events} track events)" if tracking is not None else ""
        if drained:
            log.info("detector stopped: %d frames inferred, every one handed to the sinks%s", self.inferred, events)
            # Those still in the runner: an `auto` warm-up closed the ones memory could not
            # hold. An engine still running a batch is not closed under it.
            for engine in self.runner.engines:
                engine.close()
        else:
            log.error(
                "detector stopped: %d frames inferred, but the engine or the crops did not finish in time",
                self.inferred,
            )
        return drained

    def engine_stuck_s(self) -> float:
        return self.runner.oldest_batch_age()

    def analysed(self, camera_id: str) -> int:
        with self._counts_lock:
            return self.inferred_by_camera.get(camera_id, 0)

    def accounted(self, camera_id: str) -> int:
        """The camera's frames that left analysis: their records made, or dropped."""
        with self._counts_lock:
            return self.inferred_by_camera.get(camera_id, 0) + self.dropped_by_camera.get(camera_id, 0)

    def update_postprocess(self, post: PostprocessConfig) -> None:
        """Thresholds apply from the next batch on (one attribute swap: thread-safe)."""
        self.settings = PostprocessSettings.of(post)

    def attach(self, camera_id: str, slot: LatestFrameSlot[Frame], priority: int = 0) -> None:
        with self._counts_lock:
            self.inferred_by_camera.setdefault(camera_id, 0)
            self._series[camera_id] = self.metrics.analysis.row(camera_id)
        self.batcher.attach(camera_id, slot, priority)
        if self.tracking is not None:
            self.tracking.attach(camera_id)

    async def detach(self, camera_id: str, why: Detached = Detached.stopped) -> None:
        self.batcher.detach(camera_id)
        if self.tracking is not None and why is not Detached.stopped:
            # Stopping: frames in flight still get their tracks; the detector's stop ends them.
            self.tracking.detach(camera_id, why.value, forget=why.gone)
        if why.gone:
            with self._counts_lock:
                self.inferred_by_camera.pop(camera_id, None)
                self.dropped_by_camera.pop(camera_id, None)
                self._series.pop(camera_id, None)
            self.snapshots.forget(camera_id)

    def _room_freed(self) -> None:
        self.batcher.room_freed()

    def _stale(self, frame: Frame) -> None:
        self._dropped([frame], "stale")

    def _engine_failed(self, frames: list[Frame]) -> None:
        self._dropped(frames, "engine_error")

    def _dropped(self, frames: list[Frame], reason: str) -> None:
        with self._counts_lock:
            known = [frame for frame in frames if frame.camera_id in self.inferred_by_camera]
            for frame in known:
                self.dropped_by_camera[frame.camera_id] = self.dropped_by_camera.get(frame.camera_id, 0) + 1
        for frame in known:
            self.metrics.frames_dropped.labels(frame.camera_id, reason).inc()

    def _deliver(self, result: BatchResult) -> None:
        # Runs in the engine's deliver thread, a batch at a time: postprocess, the records
        # and the metrics are each a few calls per batch, not per frame.
        self.metrics.batch_size.observe(len(result.frames))
        self.metrics.inference_seconds.observe(result.inference_s)
        found = self._faces(result)
        made = time.monotonic()
        records = [
            (frame, _record(frame, faces, made))
            for frame, faces in zip(result.frames, found, strict=True)
            if faces is not None
        ]
        events = self.tracking.observe([(f, r["faces"]) for f, r in records]) if self.tracking is not None else []
        self.outputs.offer_many([record for _, record in records] + events)
        handed = time.monotonic()
        self.inferred += len(records)
        self._count(records, result, made, handed)

    def _faces(self, result: BatchResult) -> Sequence[list[dict[str, Any]] | None]:
        """Each frame's faces as records; None for a frame that could not be post-processed."""
        boxes = [frame.letterbox for frame in result.frames if frame.letterbox is not None]
        if len(boxes) == len(result.frames):  # convert() always letterboxes
            try:
                return postprocess_batch(result.rows, boxes, self.settings).records()
            except Exception:  # noqa: BLE001 - found and counted frame by frame below
                pass
        # One frame that cannot be post-processed costs that frame, not the rest of its batch.
        return [self._faces_alone(frame, rows) for frame, rows in zip(result.frames, result.rows, strict=True)]

    def _faces_alone(self, frame: Frame, rows: Any) -> list[dict[str, Any]] | None:
        try:
            if frame.letterbox is None:
                raise ValueError("the frame was not letterboxed")
            return postprocess(rows, frame.letterbox, self.settings).as_records()
        except Exception:
            if not self._postprocess_failure_logged:
                log.exception(
                    "postprocess failed for a frame of %s; such frames are counted as dropped "
                    "(reason=postprocess_error), this is logged once",
                    frame.camera_id,
                )
                self._postprocess_failure_logged = True
            self._dropped([frame], "postprocess_error")
            return None

    def _count(
        self, records: list[tuple[Frame, dict[str, Any]]], result: BatchResult, made: float, handed: float
    ) -> None:
        """Counts, per-camera series, snapshots and stage timings of a batch's records."""
        with self._counts_lock:
            # Not for a camera removed while its frame was in the engine: its series are
            # gone and must not come back (its record was still written). Under the lock,
            # so a removed camera's row cannot be written after it is forgotten.
            known = [(frame, record) for frame, record in records if frame.camera_id in self._series]
            if not known:
                return
            for frame, _ in known:
                self.inferred_by_camera[frame.camera_id] += 1
            self.metrics.analysis.analysed(
                [self._series[frame.camera_id] for frame, _ in known],
                [len(record["faces"]) for _, record in known],
                [record["latency_s"] for _, record in known],
            )
        self.snapshots.remember([(frame, record["faces"]) for frame, record in known])
        frames = [frame for frame, _ in known]
        self.metrics.stage_seconds.observe(stage_seconds(frames, result, made, handed))


def _record(frame: Frame, faces: list[dict[str, Any]], made: float) -> dict[str, Any]:
    latency = made - frame.captured_mono
    return {
        "camera": frame.camera_id,
        "seq": frame.seq,
        "frame_pts": round(frame.pts, 6),
        "captured_at": round(frame.captured_at, 6),
        "result_at": round(frame.captured_at + latency, 6),
        "latency_s": round(latency, 6),
        "width": frame.width,
        "height": frame.height,
        "faces": faces,
    }


def stage_seconds(frames: list[Frame], result: BatchResult, made: float, handed: float) -> np.ndarray:
    """[stage, frame] seconds in `STAGES` order, for a batch whose records were made at
    `made` and handed to the sinks at `handed`. Postprocess runs from the end of the batch,
    so the wait for earlier batches' delivery counts there, and the stages add up to the
    time the records were handed over. NaN (not observed): the first three stages of a
    frame made outside a camera, which has no slot times."""
    nan = float("nan")
    decode, slot, batch = [], [], []
    for times in (frame.times for frame in frames):
        timed = bool(times.ready_mono and times.taken_mono)
        decode.append(times.decode_s if timed else nan)
        slot.append(times.taken_mono - times.ready_mono if timed else nan)
        batch.append(max(0.0, result.started_mono - times.taken_mono) if timed else nan)
    count = len(frames)
    whole_batch = [[result.inference_s] * count, [made - result.finished_mono] * count, [handed - made] * count]
    return np.array([decode, slot, batch, *whole_batch])


def _gpu_letterbox() -> Any:
    try:
        from streamd.gpu.preprocess import GpuLetterbox

        return GpuLetterbox()
    except Exception as error:  # noqa: BLE001 - ImportError, CUDA compile or driver errors
        log.warning("GPU letterbox unavailable (%s): NVDEC frames come back to the host", error)
        return None
