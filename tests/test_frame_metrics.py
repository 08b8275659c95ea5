"""The detector's batch-fed series give exactly the samples prometheus_client's own
Counter and Histogram give for the same observations, one by one."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

from streamd.metrics.analysis import LATENCY_BUCKETS, STAGE_BUCKETS, STAGES, CameraAnalysis, StageSeconds

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    return {
        key(sample.name, **sample.labels): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A sample's key in `samples`."""
    return name, tuple(sorted(labels.items()))


def registered(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_camera_series_match_prometheus_client_observation_by_observation() -> None:
    rng = np.random.default_rng(7)
    cameras = ["lobby", "door", "yard"]
    # Values on the bucket bounds (le: counted in that bucket), between, and past the last.
    edge_values = [*LATENCY_BUCKETS, 0.0, 7.5]
    batches = [
        [(cameras[int(rng.integers(3))], int(rng.integers(0, 4)), float(rng.choice(edge_values))) for _ in range(9)]
        for _ in range(20)
    ]
    analysis = CameraAnalysis()
    ours = registered(analysis)
    rows = {camera: analysis.row(camera) for camera in cameras}
    theirs = CollectorRegistry()
    inferred = Counter("streamd_frames_inferred", "Frames analysed.", ["camera"], registry=theirs)
    faces = Counter("streamd_faces_detected", "Faces found.", ["camera"], registry=theirs)
    latency = Histogram("streamd_latency_seconds", "Latency.", ["camera"], buckets=LATENCY_BUCKETS, registry=theirs)
    for batch in batches:
        analysis.analysed([rows[c] for c, _, _ in batch], [n for _, n, _ in batch], [s for _, _, s in batch])
        for camera, found, seconds in batch:
            inferred.labels(camera).inc()
            faces.labels(camera).inc(found)
            latency.labels(camera).observe(seconds)
    expected = samples(theirs)
    assert samples(ours) == expected
    assert expected[key("streamd_frames_inferred_total", camera="door")] > 0


def test_stage_seconds_match_prometheus_client_and_skip_untimed_frames() -> None:
    rng = np.random.default_rng(3)
    stages = StageSeconds()
    ours = registered(stages)
    theirs = CollectorRegistry()
    reference = Histogram("streamd_stage_seconds", "Stages.", ["stage"], buckets=STAGE_BUCKETS, registry=theirs)
    for _ in range(10):
        seconds = rng.choice([*STAGE_BUCKETS, 0.0003, 9.0], size=(len(STAGES), 5))
        seconds[:3, 0] = np.nan  # a frame made outside a camera: no decode, slot or batch time
        stages.observe(seconds)
        for stage, values in zip(STAGES, seconds, strict=True):
            for value in values[~np.isnan(values)]:
                reference.labels(stage).observe(float(value))
    expected = samples(theirs)
    assert samples(ours) == expected
    assert expected[key("streamd_stage_seconds_count", stage="decode")] == 40
    assert expected[key("streamd_stage_seconds_count", stage="sink")] == 50


def test_a_forgotten_camera_disappears_and_comes_back_from_zero() -> None:
    analysis = CameraAnalysis()
    registry = registered(analysis)
    lobby = analysis.row("lobby")
    door = analysis.row("door")
    analysis.analysed([lobby, door, lobby], [2, 1, 3], [0.05, 0.2, 0.07])
    analysis.forget("lobby")
    assert key("streamd_frames_inferred_total", camera="lobby") not in samples(registry)
    analysis.row("gate")  # may take the lobby's old row: it must start empty
    again = analysis.row("lobby")
    analysis.analysed([again], [1], [0.3])
    after = samples(registry)
    assert after[key("streamd_frames_inferred_total", camera="lobby")] == 1
    assert after[key("streamd_faces_detected_total", camera="lobby")] == 1
    assert after[key("streamd_latency_seconds_count", camera="gate")] == 0
    assert after[key("streamd_frames_inferred_total", camera="door")] == 1


def test_rows_grow_past_the_first_block_without_losing_counts() -> None:
    analysis = CameraAnalysis()
    registry = registered(analysis)
    first = analysis.row("cam0")
    analysis.analysed([first], [5], [0.01])
    rows = [analysis.row(f"cam{index}") for index in range(1, 100)]
    analysis.analysed(rows, [1] * len(rows), [0.02] * len(rows))
    found = samples(registry)
    assert found[key("streamd_faces_detected_total", camera="cam0")] == 5
    assert found[key("streamd_faces_detected_total", camera="cam99")] == 1
    assert len(set(rows)) == 99 and first not in rows
