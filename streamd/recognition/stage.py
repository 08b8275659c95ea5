"""The second stage: face crops from every camera's tracks, batched into the embedder on
its own thread, matched against the gallery.

What it is asked, and when:
- early: a track's best sightings while it is young (its first `EARLY_SIGHTINGS`, at least
  `EARLY_GAP_S` apart); the first answer becomes `track_identified` (about a second after
  the track is confirmed, at 5 fps);
- at the end: the track's best sighting; its answer is the `identity` of `track_ended`,
  and the event goes on (to the crop store, then the sinks) only then.

Batching follows the detector's rules: a batch goes when it is full (`max_batch`) or
when its oldest crop has waited `max_delay_ms`; when more wait than a batch holds, the
cameras take turns; each camera's queue is bounded, and what does not fit is dropped and
counted (early sightings) or goes on without an identity (ends). A slow or failing
embedder therefore never holds up detection: its queues fill and drop, `problem()` says
so for `/readyz`, and track events still go out.

A face that matches nobody gets a label that stays the same for the same stranger during
this run: `unknown-N`, the nearest earlier stranger within the threshold (of the last
`STRANGERS_KEPT`), or a new one.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamd.frames.face_crop import FaceCrop
from streamd.metrics.registry import Metrics
from streamd.recognition.embedders import Embedder
from streamd.recognition.gallery import Gallery

log = logging.getLogger(__name__)

Record = dict[str, Any]
EARLY_SIGHTINGS = 3
STRANGERS_KEPT = 1000
"""Strangers remembered for their labels, the most recent (a busy site's day stays bounded)."""
EARLY_GAP_S = 0.3
_RELOAD_EVERY_S = 1.0
_FAILURE_LOG_EVERY_S = 60.0


@dataclass
class _Ask:
    camera: str
    track: int
    crop: FaceCrop
    queued_mono: float
    ended: Record | None = None
    """The track's `track_ended` event, waiting for its identity; None for an early sighting."""


@dataclass
class _Stranger:
    label: str
    centre: np.ndarray
    seen: int = 1


@dataclass
class _Strangers:
    """Unknown faces clustered by nearest centre, for labels stable within a run."""

    threshold: float
    known: deque[_Stranger] = field(default_factory=lambda: deque(maxlen=STRANGERS_KEPT))
    numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def label(self, embedding: np.ndarray) -> str:
        nearest = min(self.known, key=lambda s: float(np.linalg.norm(s.centre - embedding)), default=None)
        if nearest is not None and float(np.linalg.norm(nearest.centre - embedding)) < self.threshold:
            nearest.seen += 1
            nearest.centre += (embedding - nearest.centre) / nearest.seen
            return nearest.label
        stranger = _Stranger(f"unknown-{next(self.numbers)}", embedding.astype(np.float64))
        self.known.append(stranger)
        return stranger.label


class Recognition:
    def __init__(
        self,
        embedder: Embedder,
        gallery: Gallery,
        threshold: float,
        emit: Callable[[list[Record]], None],
        ended: Callable[[Record, FaceCrop | None], None],
        metrics: Metrics,
        max_batch: int = 16,
        max_delay_s: float = 0.1,
        queue: int = 64,
    ) -> None:
        """`emit` hands `track_identified` events to the sinks; `ended(event, crop)` takes a
        `track_ended` event on once its identity is in it (to the crop store)."""
        self.embedder, self.gallery, self.threshold = embedder, gallery, threshold
        self.emit, self.ended, self.metrics = emit, ended, metrics
        self.max_batch, self.max_delay_s, self.queue = max_batch, max_delay_s, queue
        self._condition = threading.Condition()
        self._waiting: dict[str, deque[_Ask]] = {}
        self._turns: deque[str] = deque()  # cameras in the order they take turns
        self._identified: set[tuple[str, int]] = set()
        self._strangers = _Strangers(threshold)
        self._stopping = False
        self._failing: str | None = None
        self._failure_logged_at = -_FAILURE_LOG_EVERY_S
        self._reloaded_at = 0.0
        self._thread = threading.Thread(target=self._run, name="recognition", daemon=True)
        self.identified = 0
        """`track_identified` events made (by its one thread)."""
        metrics.gallery_people.set(len(gallery.people()))

    def start(self) -> None:
        self._thread.start()

    def wants(self, asked: int, last_asked_mono: float, now_mono: float) -> bool:
        """Whether a track asked `asked` times, last at `last_asked_mono`, should ask now."""
        return asked < EARLY_SIGHTINGS and now_mono - last_asked_mono >= EARLY_GAP_S

    def ask(self, camera: str, track: int, crop: FaceCrop) -> None:
        """An early sighting of a track (the deliver thread); dropped and counted when behind."""
        if not self._put(_Ask(camera, track, crop, time.monotonic())):
            self.metrics.recognition_dropped.labels(camera, "queue_full").inc()

    def end(self, event: Record, crop: FaceCrop | None) -> None:
        """A track ended: its identity from `crop` (its best face), then `ended(event, crop)`."""
        if crop is None or not self._put(_Ask(event["camera"], event["track"], crop, time.monotonic(), event)):
            if crop is not None:
                self.metrics.recognition_dropped.labels(event["camera"], "queue_full").inc()
            self._finish(event, crop, None)

    def problem(self) -> str | None:
        """Why the second stage is not working now, or None."""
        return self._failing

    def stop(self, timeout: float) -> bool:
        """Answer what is queued within `timeout`; ends left then go on without identity."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        self._thread.join(max(0.0, timeout))
        if not self._thread.is_alive():
            return True
        with self._condition:  # out of time: what waits goes on unanswered
            left = [ask for asks in self._waiting.values() for ask in asks]
            self._waiting.clear()
        for ask in left:
            if ask.ended is not None:
                self._finish(ask.ended, ask.crop, None)
        return False

    def _put(self, ask: _Ask) -> bool:
        with self._condition:
            if self._stopping and ask.ended is None:
                return False
            waiting = self._waiting.setdefault(ask.camera, deque())
            if len(waiting) >= self.queue and ask.ended is None:
                return False
            if ask.camera not in self._turns:
                self._turns.append(ask.camera)
            waiting.append(ask)
            self._condition.notify()
            return True

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._answer(batch)

    def _next_batch(self) -> list[_Ask] | None:
        with self._condition:
            while not any(self._waiting.values()):
                if self._stopping:
                    return None
                self._condition.wait()
            oldest = min(asks[0].queued_mono for asks in self._waiting.values() if asks)
            deadline = oldest + self.max_delay_s
            while not self._stopping and sum(map(len, self._waiting.values())) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            batch: list[_Ask] = []
            while len(batch) < self.max_batch and self._turns:
                camera = self._turns.popleft()
                asks = self._waiting.get(camera)
                if asks:
                    batch.append(asks.popleft())
                if asks:
                    self._turns.append(camera)  # its next turn after the others'
                elif camera in self._waiting:
                    del self._waiting[camera]
            return batch

    def _answer(self, batch: list[_Ask]) -> None:
        started = time.monotonic()
        try:
            if started - self._reloaded_at >= _RELOAD_EVERY_S:
                self._reloaded_at = started
                if self.gallery.reload():
                    people = len(self.gallery.people())
                    self.metrics.gallery_people.set(people)
                    log.info("gallery %s read again: %d people", self.gallery.path, people)
            embeddings = self.embedder.embed([ask.crop for ask in batch])
        except Exception as error:  # noqa: BLE001 - the second stage's failure is not the daemon's
            self._failed(error, batch)
            return
        self._failing = None
        done = time.monotonic()
        self.metrics.recognition_batch_size.observe(len(batch))
        for ask, embedding in zip(batch, embeddings, strict=True):
            self.metrics.recognition_seconds.observe(done - ask.queued_mono)
            identity = self._identity(embedding)
            self.metrics.identifications.labels(ask.camera, "known" if identity["name"] else "unknown").inc()
            if ask.ended is not None:
                self._finish(ask.ended, ask.crop, identity)
                continue
            key = (ask.camera, ask.track)
            with self._condition:
                first = key not in self._identified
                self._identified.add(key)
            if first:
                event = {"event": "track_identified", "camera": ask.camera, "track": ask.track, "identity": identity}
                self.identified += 1
                self.emit([event])

    def _finish(self, event: Record, crop: FaceCrop | None, identity: Record | None) -> None:
        """The track's last answer: into its `track_ended` event, which goes on; the track
        is forgotten here."""
        event["identity"] = identity
        with self._condition:
            self._identified.discard((event["camera"], event["track"]))
        self.ended(event, crop)

    def _identity(self, embedding: np.ndarray) -> Record:
        match = self.gallery.match(embedding, self.threshold)
        label = match.name if match.name is not None else self._strangers.label(embedding)
        distance = None if match.distance == float("inf") else round(match.distance, 4)
        return {"name": match.name, "label": label, "distance": distance, "embedder": self.embedder.name}

    def _failed(self, error: Exception, batch: list[_Ask]) -> None:
        self._failing = f"recognition failing: {type(error).__name__}: {error}"
        now = time.monotonic()
        if now - self._failure_logged_at >= _FAILURE_LOG_EVERY_S:
            self._failure_logged_at = now
            log.error("%s (%d face(s) unanswered; logged once a minute)", self._failing, len(batch))
        for ask in batch:
            self.metrics.recognition_dropped.labels(ask.camera, "error").inc()
            if ask.ended is not None:
                self._finish(ask.ended, ask.crop, None)
