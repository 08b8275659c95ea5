"""A batch through the real detector (slots, batcher, runner, postprocess, a JSON Lines
sink): each frame gets its record and its series; a frame that cannot be post-processed
costs that frame only."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from devtools.bench.scale import SleepingEngine
from streamd.analysis.detector import Detector
from streamd.analysis.postprocess import PostprocessSettings, postprocess
from streamd.camera.slot import LatestFrameSlot
from streamd.config.schema import BatcherConfig, JsonlSinkConfig, PostprocessConfig
from streamd.frames.frame import Frame, StageTimes
from streamd.frames.letterbox import letterbox_geometry
from streamd.metrics.registry import Metrics
from streamd.sinks.factory import build_sinks
from streamd.sinks.outputs import Outputs
from tests.support.waiting import run, wait_for

BOX = letterbox_geometry(1920, 1080, 640, 640)[2]


def frame(camera_id: str, letterboxed: bool) -> Frame:
    now = time.monotonic()
    image = np.full((640, 640, 3), 114, np.uint8)
    box = BOX if letterboxed else None
    return Frame(camera_id, 0, 0.0, time.time(), now, 1920, 1080, image, box, StageTimes(0.002, ready_mono=now))


def test_one_frame_that_cannot_be_postprocessed_costs_only_itself(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    cameras = ["lobby", "broken", "door"]
    engine = SleepingEngine(max_batch=4, fixed_s=0.0, per_frame_s=0.0)

    async def scenario() -> tuple[Metrics, Detector]:
        metrics = Metrics()
        outputs = Outputs(build_sinks([JsonlSinkConfig(path=str(out), rotate_mb=None)], metrics))
        batcher = BatcherConfig(max_batch=4, max_delay_ms=200)
        detector = Detector([engine], batcher, PostprocessConfig(), outputs, metrics, warmup=False)
        outputs.start()
        await detector.start()
        loop = asyncio.get_running_loop()
        for camera_id in cameras:
            slot: LatestFrameSlot[Frame] = LatestFrameSlot(loop)
            detector.attach(camera_id, slot)
            slot.put(frame(camera_id, letterboxed=camera_id != "broken"))
        await wait_for(lambda: metrics.registry.get_sample_value("streamd_batch_size_sum") == 3, 10, "the batch")
        assert await detector.stop(10) and await outputs.stop(10)
        return metrics, detector

    metrics, detector = run(scenario())
    registry = metrics.registry
    records = {record["camera"]: record for record in map(json.loads, out.read_text().splitlines())}
    assert registry.get_sample_value("streamd_batch_size_count") == 1, "one batch of the three frames"
    assert sorted(records) == ["door", "lobby"]
    assert (
        registry.get_sample_value("streamd_frames_dropped_total", {"camera": "broken", "reason": "postprocess_error"})
        == 1
    )
    # The batch's images were the engine's first three: each record has its own image's faces.
    for camera_id, record in records.items():
        expected = postprocess(engine.planes[cameras.index(camera_id)], BOX, PostprocessSettings()).as_records()
        assert record["faces"] == expected and len(expected) == 2
        labels = {"camera": camera_id}
        assert registry.get_sample_value("streamd_frames_inferred_total", labels) == 1
        assert registry.get_sample_value("streamd_faces_detected_total", labels) == 2
        assert registry.get_sample_value("streamd_latency_seconds_count", labels) == 1
    assert registry.get_sample_value("streamd_frames_inferred_total", {"camera": "broken"}) == 0
    for stage in ("decode", "slot", "batch", "inference", "postprocess", "sink"):
        assert registry.get_sample_value("streamd_stage_seconds_count", {"stage": stage}) == 2, stage
    assert detector.analysed("lobby") == 1 and detector.analysed("broken") == 0
