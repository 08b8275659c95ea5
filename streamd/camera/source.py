"""CameraSource: keeps one camera streaming, whatever the camera does.

One asyncio task per camera runs a loop of connection attempts. Each attempt is a
DecodeSession in the camera's own thread; sampled frames land in the camera's
latest-frame slot. When an attempt ends in error the camera waits out a backoff delay
(full jitter) and tries again; permanent errors stop it in `failed`. A run of healthy
streaming longer than `backoff.reset_after_s` forgives earlier failures.

States: starting -> streaming -> backoff -> starting ... ; stopped; failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from streamd.camera.backoff import Backoff
from streamd.camera.decoder import Converter, DecodeSession, to_rgb
from streamd.camera.errors import SourceError
from streamd.camera.nvdec import DecoderChoice
from streamd.camera.slot import LatestFrameSlot
from streamd.config import CameraConfig
from streamd.frame import Frame
from streamd.metrics import CameraMetrics
from streamd.redact import redact_url
from streamd.supervision import Failures
from streamd.threads import run_in_thread

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
        keep_on_gpu: bool = False,
        failures: Failures | None = None,
    ) -> None:
        self.camera = camera
        self.failures = failures or Failures()
        self.convert = convert
        self.keep_on_gpu = keep_on_gpu
        self.camera_id = camera.id
        self.slot = slot
        self.metrics = metrics
        self.log = CameraLog(log, {"camera": camera.id})
        self.state = "stopped"
        self.reason: str | None = None
        self.message: str | None = None
        self.decoder_choice = DecoderChoice()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: DecodeSession | None = None
        self._streaming_since: float | None = None
        self._thread_stop = threading.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            task = asyncio.create_task(self._run(), name=f"camera-{self.camera_id}")
            self._task = self.failures.watch(task, f"camera-{self.camera_id}")

    async def stop(self) -> None:
        """Stop the camera and wait for its thread; safe to call more than once."""
        self._thread_stop.set()
        self._stopping.set()
        if self._task is None:
            return
        # A thread blocked in a network read notices the flag only when the read times
        # out; give it that long, then stop waiting (it is a daemon thread).
        bound = max(self.camera.open_timeout_s, self.camera.stall_timeout_s) + 1.0
        try:
            await asyncio.wait_for(asyncio.shield(self._task), bound)
        except TimeoutError:
            self.log.warning("decode thread did not stop within %.0fs; leaving it behind", bound)
            self._task.cancel()
        except Exception:  # noqa: BLE001 - the crash was reported when it happened
            pass
        self._set_state("stopped", None, None)

    @property
    def decoder(self) -> str:
        """The decoder of the current connection: `nvdec` or `cpu`."""
        return self.decoder_choice.decoder

    @property
    def last_frame_mono(self) -> float | None:
        """time.monotonic() of the last decoded frame, or None before the first."""
        return self._session.last_decoded_mono if self._session else None

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
            self._set_state("starting", self.reason, self.message)
            try:
                await run_in_thread(self._new_session().run, name=f"decode-{self.camera_id}")
            except SourceError as error:
                self._record_streaming(backoff)
                self.metrics.connection_failed(error.reason.value)
                if error.permanent:
                    self._set_state("failed", error.reason.value, str(error))
                    self.log.error("failed: %s (%s); not retrying", error, error.reason.value)
                    return
                if self._stopping.is_set():
                    break
                delay = backoff.next_delay()
                # The first failure of a kind is news; the same one again is not.
                level = logging.INFO if error.reason.value == self.reason else logging.WARNING
                self._set_state("backoff", error.reason.value, str(error))
                self.log.log(level, "%s (%s); reconnecting in %.1fs", error, error.reason.value, delay)
                await self._sleep(delay)
                continue
            except Exception as error:  # noqa: BLE001 - reported as a crash
                # A bug, not a camera problem: reported (logged once, counted, not ready,
                # so systemd restarts the service); meanwhile the other cameras carry on
                # and this one retries as after any failure.
                self.failures.report(f"camera-{self.camera_id}", error)
                self.metrics.connection_failed("error")
                self._set_state("backoff", "error", "internal error, see the log")
                await self._sleep(backoff.next_delay())
                continue
            self._record_streaming(backoff)
            if self.camera.is_file and not self._stopping.is_set():
                attempt = 0  # a replayed file loops; that is not a reconnect
        self._set_state("stopped", None, None)

    def _new_session(self) -> DecodeSession:
        previous = self._session
        self._session = DecodeSession(
            self.camera,
            deliver=self._deliver,
            metrics=self.metrics,
            stop=self._thread_stop,
            on_streaming=self._on_streaming_from_thread,
            convert=self.convert,
            choice=self.decoder_choice,
            log=self.log.info,
            keep_on_gpu=self.keep_on_gpu,
        )
        if previous is not None:
            self._session.seq = previous.seq
            self._session.last_decoded_mono = previous.last_decoded_mono
        return self._session

    def _deliver(self, frame: Frame) -> None:
        # Runs in the decode thread.
        if self.slot.put(frame):
            self.metrics.frame_replaced()

    def _on_streaming_from_thread(self) -> None:
        self._streaming_since = time.monotonic()
        assert self._loop is not None  # set by start(), before any thread exists
        self._loop.call_soon_threadsafe(self._set_state, "streaming", None, None)

    def _record_streaming(self, backoff: Backoff) -> None:
        if self._streaming_since is not None:
            backoff.streamed_for(time.monotonic() - self._streaming_since)
            self._streaming_since = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _set_state(self, state: str, reason: str | None, message: str | None) -> None:
        if state != self.state:
            self.log.debug("state %s -> %s", self.state, state)
            if state == "streaming":
                self.log.info("streaming")
        self.state, self.reason, self.message = state, reason, message
