"""The detector's per-frame series, fed a batch at a time.

prometheus_client's `Counter.inc` and `Histogram.observe` take a lock and run Python for
every call (about 1 and 3.7 us); per analysed frame the detector made nine of them (its
camera's three series and six stage timings), which cost as much as the rest of its own
work for the frame. These collectors take a whole batch's values as arrays: bucketing
and adding are a few NumPy calls per batch under one lock, and the samples are built
when Prometheus scrapes. Names, labels, buckets and samples are those prometheus_client
would give (`_total`, `_bucket{le}`, `_count`, `_sum`; no `_created`, as elsewhere).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STAGES = ("decode", "slot", "batch", "inference", "postprocess", "sink")


class _Histograms:
    """Histograms with one row each: bucket counts (the last is +Inf) and sums."""

    def __init__(self, buckets: Sequence[float], rows: int = 0) -> None:
        self.bounds = np.array([*buckets, np.inf])
        self._le = [floatToGoString(bound) for bound in self.bounds]  # type: ignore[no-untyped-call]
        self.counts = np.zeros((rows, len(self.bounds)), np.int64)
        self.sums = np.zeros(rows)

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        # A value goes in the first bucket whose bound it does not exceed (le), as
        # prometheus_client's observe: searchsorted's left side.
        np.add.at(self.counts, (rows, np.searchsorted(self.bounds, values)), 1)
        np.add.at(self.sums, rows, values)

    def grow(self, rows: int) -> None:
        extra = rows - len(self.sums)
        self.counts = np.concatenate([self.counts, np.zeros((extra, self.counts.shape[1]), np.int64)])
        self.sums = np.concatenate([self.sums, np.zeros(extra)])

    def clear(self, row: int) -> None:
        self.counts[row] = 0
        self.sums[row] = 0.0

    def family(self, name: str, documentation: str, label: str, rows: dict[str, int]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=[label])
        cumulative = np.cumsum(self.counts, axis=1).tolist()
        sums = self.sums.tolist()
        for value, row in rows.items():
            family.add_metric([value], list(zip(self._le, map(float, cumulative[row]), strict=True)), sums[row])
        return family


class CameraAnalysis(Collector):
    """`streamd_frames_inferred`, `streamd_faces_detected` and `streamd_latency_seconds`
    by camera. Each camera has a row, resolved once when it is attached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, int] = {}
        self._free: list[int] = []
        self._inferred = np.zeros(0)
        self._faces = np.zeros(0)
        self._latency = _Histograms(LATENCY_BUCKETS)

    def row(self, camera_id: str) -> int:
        """The camera's row (a new one, or its existing one)."""
        with self._lock:
            if camera_id in self._rows:
                return self._rows[camera_id]
            if not self._free:
                self._grow()
            row = self._rows[camera_id] = self._free.pop()
            return row

    def forget(self, camera_id: str) -> None:
        """The camera's series go (a removed camera); its row is cleared for another."""
        with self._lock:
            row = self._rows.pop(camera_id, None)
            if row is not None:
                self._inferred[row] = self._faces[row] = 0.0
                self._latency.clear(row)
                self._free.append(row)

    def analysed(self, rows: Sequence[int], faces: Sequence[int], latencies: Sequence[float]) -> None:
        """A batch's frames: each one's camera row, faces found and latency in seconds."""
        where = np.asarray(rows, dtype=np.intp)
        with self._lock:
            np.add.at(self._inferred, where, 1.0)
            np.add.at(self._faces, where, np.asarray(faces, dtype=np.float64))
            self._latency.add(where, np.asarray(latencies, dtype=np.float64))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rows = dict(self._rows)
            inferred, faces = self._inferred.tolist(), self._faces.tolist()
            latency = self._latency.family(
                "streamd_latency_seconds", "Capture (decode) to detection result, per analysed frame.", "camera", rows
            )
        frames = CounterMetricFamily("streamd_frames_inferred", "Frames analysed by the detector.", labels=["camera"])
        found = CounterMetricFamily("streamd_faces_detected", "Faces found in analysed frames.", labels=["camera"])
        for camera_id, row in rows.items():
            frames.add_metric([camera_id], inferred[row])
            found.add_metric([camera_id], faces[row])
        yield from (frames, found, latency)

    def _grow(self) -> None:
        # Doubling: rows are resolved when cameras attach, not per frame.
        size = len(self._inferred)
        bigger = max(16, 2 * size)
        self._inferred = np.concatenate([self._inferred, np.zeros(bigger - size)])
        self._faces = np.concatenate([self._faces, np.zeros(bigger - size)])
        self._latency.grow(bigger)
        self._free.extend(range(bigger - 1, size - 1, -1))


class StageSeconds(Collector):
    """`streamd_stage_seconds{stage}`: the time each analysed frame spent in each stage."""

    DOCUMENTATION = (
        "Time each analysed frame spent in each stage: decode (and convert), slot (waiting in its "
        "camera's slot), batch (taken until its batch starts in the engine), inference, postprocess "
        "(from its batch's end until its batch's records are made), sink (handing its batch's records "
        "to the sinks)."
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._histograms = _Histograms(STAGE_BUCKETS, rows=len(STAGES))
        self._rows = {stage: row for row, stage in enumerate(STAGES)}

    def observe(self, seconds: np.ndarray) -> None:
        """`seconds`: [len(STAGES), frames], each row one stage's times for the frames;
        NaN where a frame has no time for a stage (it is not counted there)."""
        rows = np.repeat(np.arange(len(STAGES)), seconds.shape[1])
        values = seconds.ravel()
        timed = ~np.isnan(values)
        with self._lock:
            self._histograms.add(rows[timed], values[timed])

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            family = self._histograms.family("streamd_stage_seconds", self.DOCUMENTATION, "stage", self._rows)
        yield family
