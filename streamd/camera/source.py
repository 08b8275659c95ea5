"""CameraSource: keeps one camera streaming, whatever the camera does.

One asyncio task per camera runs a loop of connection attempts. Each attempt is a
DecodeSession in the camera's own thread; sampled frames land in the camera's
latest-frame slot. When an attempt ends in error the camera waits out a backoff delay
(full jitter) and tries again; permanent errors stop it in `failed`. A run of healthy
streaming longer than `backoff.reset_after_s` forgives earlier failures.

States (`CameraState`): starting -> streaming -> backoff -> starting ... ; stopped;
failed. What outlives a connection (frame numbers, the decoder verdict, the sampled
rate) is kept in one `CameraRun`, shared with each connection's DecodeSession.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from streamd.base.failures import Failures
from streamd.base.redact import redact_url
from streamd.base.threads import run_in_thread
from streamd.camera.backoff import Backoff
from streamd.camera.decoder import Converter, DecodeSession, to_rgb
from streamd.camera.errors import CameraError, Reason
from streamd.camera.slot import LatestFrameSlot
from streamd.camera.state import CameraRun, CameraState, CameraStatus, Decoder
from streamd.config.schema import CameraConfig
from streamd.frames.frame import Frame
from streamd.metrics.registry import CameraMetrics

log = logging.getLogger(__name__)


class CameraLog(logging.LoggerAdapter[logging.Logger]):
    """Puts the camera id on every line, in the text and as a field for JSON logs."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        camera = (self.extra or {}).get("camera")
        kwargs.setdefault("extra", {})["camera"] = camera
        return f"[{camera}] {msg}", kwargs


class CameraSource:
    def __init__(
        self,
        camera: CameraConfig,
        slot: LatestFrameSlot[Frame],
        metrics: CameraMetrics,
        convert: Converter = to_rgb,
        failures: Failures | None = None,
        keep_picture: Callable[[], bool] = lambda: False,
    ) -> None:
        """`keep_picture()`: whether a sampled frame carries its decoded picture (asked per frame)."""
        self.camera = camera
        self.failures = failures or Failures()
        self.convert = convert
        self.keep_picture = keep_picture
        self.camera_id = camera.id
        self.slot = slot
        self.metrics = metrics
        self.log = CameraLog(log, {"camera": camera.id})
        self.run = CameraRun(camera.fps)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop = threading.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            task = asyncio.create_task(self._run(), name=f"camera-{self.camera_id}")
            self._task = self.failures.watch(task, f"camera-{self.camera_id}")

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the camera and wait for its thread, at most `timeout`; safe to call more than once.

        A thread blocked in connecting or in a network read notices the flag only when
        FFmpeg's timeout interrupts it; by default it is given that long. A thread still
        busy at the end is left behind (a daemon thread: it has no frames to lose and the
        camera's slot is no longer read).
        """
        self._thread_stop.set()
        self._stopping.set()
        if self._task is None:
            return
        bound = max(self.camera.open_timeout_s, self.camera.stall_timeout_s) + 1.0
        if timeout is not None:
            bound = min(bound, timeout)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), bound)
        except TimeoutError:
            self.log.warning("decode thread did not stop within %.1fs; leaving it behind", bound)
            self._task.cancel()
        except Exception:  # noqa: BLE001 - the crash was reported when it happened
            pass
        self._set_state(CameraState.stopped, None, None)

    def status(self) -> CameraStatus:
        """What the camera is doing now, read at once (any thread)."""
        run, counts = self.run, self.metrics
        return CameraStatus(
            self.camera_id,
            redact_url(self.camera.url),
            self.camera.priority,
            self.camera.fps,
            run.fps,
            run.state,
            run.reason,
            run.message,
            run.decoder,
            run.transport,
            run.keyframes_only,
            run.decode_lag_s,
            run.last_decoded_mono,
            counts.decoded,
            counts.sampled,
            counts.replaced,
            counts.reconnects,
        )

    @property
    def state(self) -> CameraState:
        return self.run.state

    @property
    def reason(self) -> str | None:
        return self.run.reason

    @property
    def message(self) -> str | None:
        return self.run.message

    @property
    def decoder(self) -> Decoder:
        """The decoder of the current connection."""
        return self.run.decoder

    @property
    def placed_on_nvdec(self) -> bool:
        """Whether the NVDEC budget has room for this camera (`decode: auto` only uses NVDEC then)."""
        return self.run.nvdec_placed

    def place_on_nvdec(self, placed: bool) -> None:
        """The NVDEC plan changed for this camera: a streaming connection moves to the
        other decoder at its next keyframe (read by the decode thread)."""
        self.run.nvdec_placed = placed

    @property
    def target_fps(self) -> float:
        return self.camera.fps

    @property
    def sampling_fps(self) -> float:
        """The rate sampled now: `fps`, unless overload lowered it."""
        return self.run.fps

    def set_sampling_fps(self, fps: float) -> None:
        """Sample at `fps` from the next frame on (the decode thread reads it per frame)."""
        self.run.fps = fps

    @property
    def decode_lag_s(self) -> float | None:
        """Capture to decode of the last sampled frame, where the stream says when it captured."""
        return self.run.decode_lag_s

    @property
    def last_frame_mono(self) -> float | None:
        """time.monotonic() of the last decoded frame, or None before the first."""
        return self.run.last_decoded_mono

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- the connection loop -----------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.camera.backoff)
        self.log.info("starting %s at %g fps", redact_url(self.camera.url), self.camera.fps)
        attempt = 0
        while not self._stopping.is_set():
            if attempt:
                self.metrics.reconnecting()
            attempt += 1
            # Keep the last failure's reason while retrying: it is why we are not streaming.
            self._set_state(CameraState.starting, self.reason, self.message)
            try:
                await run_in_thread(self._new_session().run, name=f"decode-{self.camera_id}")
            except CameraError as error:
                self._record_streaming(backoff)
                self.metrics.connection_failed(error.reason.value)
                if error.permanent:
                    self._set_state(CameraState.failed, error.reason.value, str(error))
                    self.log.error("failed: %s (%s); not retrying", error, error.reason.value)
                    return
                if self._stopping.is_set():
                    break
                delay = backoff.next_delay()
                # The first failure of a kind is news; the same one again is not. Running
                # out of descriptors is the process's news, logged once by the health loop.
                repeated = error.reason.value == self.reason or error.reason is Reason.local_resources
                level = logging.INFO if repeated else logging.WARNING
                self._set_state(CameraState.backoff, error.reason.value, str(error))
                self.log.log(level, "%s (%s); reconnecting in %.1fs", error, error.reason.value, delay)
                await self._sleep(delay)
                continue
            except Exception as error:  # noqa: BLE001 - reported as a crash
                # A bug, not a camera problem: reported (logged once, counted, not ready,
                # so systemd restarts the service); meanwhile the other cameras carry on
                # and this one retries as after any failure.
                self.failures.report(f"camera-{self.camera_id}", error)
                self.metrics.connection_failed("error")
                self._set_state(CameraState.backoff, "error", "internal error, see the log")
                await self._sleep(backoff.next_delay())
                continue
            self._record_streaming(backoff)
            if self.camera.is_file and not self._stopping.is_set():
                attempt = 0  # a replayed file loops; that is not a reconnect
        self._set_state(CameraState.stopped, None, None)

    def _new_session(self) -> DecodeSession:
        return DecodeSession(
            self.camera,
            deliver=self._deliver,
            metrics=self.metrics,
            stop=self._thread_stop,
            on_streaming=self._on_streaming_from_thread,
            convert=self.convert,
            camera_run=self.run,
            log=self.log.info,
            keep_picture=self.keep_picture,
        )

    def _deliver(self, frame: Frame) -> None:
        # Runs in the decode thread.
        if self.slot.put(frame):
            self.metrics.frame_replaced()

    def _on_streaming_from_thread(self) -> None:
        self.run.streaming_since = time.monotonic()
        assert self._loop is not None  # set by start(), before any thread exists
        self._loop.call_soon_threadsafe(self._set_state, CameraState.streaming, None, None)

    def _record_streaming(self, backoff: Backoff) -> None:
        if self.run.streaming_since is not None:
            backoff.streamed_for(time.monotonic() - self.run.streaming_since)
            self.run.streaming_since = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _set_state(self, state: CameraState, reason: str | None, message: str | None) -> None:
        run = self.run
        if state != run.state:
            self.log.debug("state %s -> %s", run.state, state)
            if state is CameraState.streaming:
                self.log.info("streaming")
        run.state, run.reason, run.message = state, reason, message
