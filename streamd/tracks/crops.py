"""Best-face crops on disk (`streamd.frames.face_crop` cuts and aligns them), kept within
an age and a size.

A track keeps only its best sighting's crop (the face with a margin, at the camera's
own resolution), replaced when a better sighting comes: never a frame. When the track
ends, `CropStore` writes that crop as a JPEG and an aligned 112x112 chip beside it
(the five-landmark similarity transform onto the ArcFace template, which ArcFace-style
recognition models expect), then hands on the track's event with the paths in it, so a
consumer that reads an event finds its files. Writing is on the store's own thread,
off the inference path; a full queue or a failed write costs the files, never the event
(`crop` is null then, and the loss is counted).

Retention: files older than `max_age_h` go, then the oldest until the directory holds
at most `max_mb`. The store reads the directory once at start and keeps its own
account after that, so a sweep never walks a million files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamd.base.failures import Failures
from streamd.config.schema import CropsConfig
from streamd.frames.face_crop import FaceCrop, align
from streamd.frames.jpeg import encode_jpeg

log = logging.getLogger(__name__)

_QUEUE = 1000
RECENT = 6
"""Best faces kept at hand per camera, for the status page."""
_SWEEP_EVERY_S = 30.0
_FAILURE_LOG_EVERY_S = 60.0

Record = dict[str, Any]


@dataclass(frozen=True)
class _Job:
    event: Record
    crop: FaceCrop


class CropStore:
    def __init__(
        self,
        settings: CropsConfig,
        emit: Callable[[list[Record]], None],
        on_lost: Callable[[str], None] = lambda reason: None,
        failures: Failures | None = None,
    ) -> None:
        """`emit` hands events on (to the sinks); `on_lost(reason)` counts crops not
        written (`queue_full`, `write_error`, `shutdown`)."""
        self.settings = settings
        self.emit = emit
        self.on_lost = on_lost
        self.failures = failures or Failures()
        self._jobs: queue.Queue[_Job | None] = queue.Queue(_QUEUE)
        self._thread = threading.Thread(target=self._run, name="crops", daemon=True)
        self._files: deque[tuple[float, Path, int]] = deque()  # (mtime, path, bytes), oldest first
        self._bytes = 0
        self._failure_logged_at = -_FAILURE_LOG_EVERY_S
        self._stopping = False
        self._recent_lock = threading.Lock()
        self._recent: dict[str, deque[tuple[int, Path]]] = {}

    @property
    def directory(self) -> Path:
        assert self.settings.directory is not None  # the config fills it in
        return Path(self.settings.directory)

    def start(self) -> None:
        self._thread.start()

    def recent(self, camera_id: str) -> list[int]:
        """The tracks whose best faces were written last for the camera, newest first."""
        with self._recent_lock:
            return [track for track, _ in self._recent.get(camera_id, ())]

    def best_face(self, camera_id: str, track: int) -> bytes | None:
        """The best-face crop (JPEG) of one of the camera's `recent` tracks; None otherwise
        (also once retention removed it)."""
        with self._recent_lock:
            found = next((path for t, path in self._recent.get(camera_id, ()) if t == track), None)
        if found is None:
            return None
        try:
            return (self.directory / found).read_bytes()
        except OSError:
            return None

    def forget(self, camera_id: str) -> None:
        with self._recent_lock:
            self._recent.pop(camera_id, None)

    def put(self, event: Record, crop: FaceCrop | None) -> None:
        """Write `crop` for `event` (a `track_ended`), then emit the event; without a crop,
        or when the store is behind or stopped, the event goes on at once with `crop` null."""
        if crop is None or not self.settings.enabled or self._stopping:
            self.emit([event])
            return
        try:
            self._jobs.put_nowait(_Job(event, crop))
        except queue.Full:
            self.on_lost("queue_full")
            self.emit([event])

    def stop(self, timeout: float) -> bool:
        """Write what is queued within `timeout`; events left then go on without crops."""
        self._stopping = True
        if not self._thread.is_alive():
            return True
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._jobs.put(None, timeout=max(0.0, timeout))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return True
        # Out of time (a disk that hangs): the events still waiting go on without crops.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return False
            if job is not None:
                self.on_lost("shutdown")
                self.emit([job.event])

    def _run(self) -> None:
        self._index()
        self._sweep()  # what an earlier run left beyond the limits goes first
        swept = time.monotonic()
        while True:
            try:
                job = self._jobs.get(timeout=_SWEEP_EVERY_S)
            except queue.Empty:
                if self._stopping:
                    return
            else:
                if job is None:  # the stop's marker: everything before it is written
                    return
                self._write(job)
            if time.monotonic() - swept >= _SWEEP_EVERY_S or self._bytes > self.settings.max_mb * 1e6:
                self._sweep()
                swept = time.monotonic()

    def _write(self, job: _Job) -> None:
        event = job.event
        best = event["best"]
        stamp = datetime.fromtimestamp(event["first_at"], UTC)
        relative = Path(event["camera"]) / stamp.strftime("%Y-%m-%d") / f"{stamp:%H%M%S}.{stamp:%f}-{event['track']}"
        try:
            crop_path = relative.with_name(relative.name + ".jpg")
            chip_path = relative.with_name(relative.name + "-chip.jpg")
            quantizer = self.settings.jpeg_quantizer
            self._save(crop_path, encode_jpeg(job.crop.pixels, quantizer))
            self._save(chip_path, encode_jpeg(align(job.crop), quantizer))
            best["crop"], best["chip"] = str(crop_path), str(chip_path)
            with self._recent_lock:
                recent = self._recent.setdefault(event["camera"], deque(maxlen=RECENT))
                recent.appendleft((int(event["track"]), crop_path))
        except (OSError, ValueError) as error:
            self.on_lost("write_error")
            now = time.monotonic()
            if now - self._failure_logged_at >= _FAILURE_LOG_EVERY_S:
                self._failure_logged_at = now
                log.warning("crops: cannot write under %s: %s (logged once a minute)", self.directory, error)
        self.emit([event])

    def _save(self, relative: Path, data: bytes) -> None:
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        with open(partial, "wb") as file:
            file.write(data)
        os.replace(partial, path)  # a reader never sees half a JPEG
        self._files.append((time.time(), path, len(data)))
        self._bytes += len(data)

    def _index(self) -> None:
        """What the directory holds already (an earlier run's crops), oldest first."""
        found = []
        for root, _dirs, names in os.walk(self.directory):
            for name in names:
                if name.endswith(".jpg"):
                    path = Path(root) / name
                    try:
                        stat = path.stat()
                    except OSError:
                        continue
                    found.append((stat.st_mtime, path, stat.st_size))
        found.sort()
        self._files = deque(found)
        self._bytes = sum(size for _, _, size in found)

    def _sweep(self) -> None:
        """Remove what is older than `max_age_h`, then the oldest until within `max_mb`."""
        oldest_kept = time.time() - self.settings.max_age_h * 3600
        limit = self.settings.max_mb * 1e6
        while self._files and (self._files[0][0] < oldest_kept or self._bytes > limit):
            _, path, size = self._files.popleft()
            self._bytes -= size
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("crops: cannot remove %s: %s", path, error)
            _remove_empty(path.parent, self.directory)


def _remove_empty(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or gone): stop climbing
        folder = folder.parent
