"""Faces out of a real RTSP camera, through the whole daemon, into the JSON Lines sink."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from devtools.testing.demo import CACHE_DIR
from devtools.testing.video import VideoSpec, cached_video
from streamd.analysis.postprocess import PostprocessSettings
from streamd.analysis.still_images import detect_images
from streamd.config.loader import LoadedConfig
from streamd.config.schema import StreamsConfig
from streamd.service.daemon import Daemon, DaemonOptions
from tests.support.environment import StartRtspServer
from tests.support.faces import box_iou
from tests.support.waiting import run, wait_for

pytestmark = [pytest.mark.rtsp, pytest.mark.assets]


def test_group9_camera_gives_8_faces_per_analysed_frame_in_camera_pixels(
    rtsp_servers: StartRtspServer, assets_dir: Path, canonical_model: Path, tmp_path: Path
) -> None:
    photo = assets_dir / "images" / "group9.jpg"
    video = cached_video(VideoSpec(width=1024, height=768, fps=25, seconds=6, image=str(photo), pan=False), CACHE_DIR)
    reference = detect_images([str(photo)], canonical_model, PostprocessSettings())[0]["faces"]
    out = tmp_path / "detections.jsonl"
    server = rtsp_servers({"group9": video})

    stages: dict[str, tuple[float, float]] = {}

    async def scenario() -> int:
        config = StreamsConfig.model_validate(
            {
                "engine": {"model": str(canonical_model)},
                "batcher": {"max_batch": 4, "max_delay_ms": 10},
                "sinks": [{"path": str(out)}],
                "cameras": [{"id": "group9", "url": server.url("group9"), "fps": 5}],
            }
        )
        daemon = Daemon(LoadedConfig(config), DaemonOptions(metrics_port=0, rate_log_interval_s=3600))
        await daemon.start()
        try:
            detector = daemon.detector
            await wait_for(lambda: getattr(detector, "inferred", 0) >= 20, 60, "20 analysed frames")
            await asyncio.sleep(0.5)
        finally:
            await daemon.stop()
        registry = daemon.metrics.registry
        for stage in ("decode", "slot", "batch", "inference", "postprocess", "sink"):
            labels = {"stage": stage}
            count = registry.get_sample_value("streamd_stage_seconds_count", labels) or 0.0
            stages[stage] = (count, registry.get_sample_value("streamd_stage_seconds_sum", labels) or 0.0)
        camera = {"camera": "group9"}
        stages["latency"] = (
            registry.get_sample_value("streamd_latency_seconds_count", camera) or 0.0,
            registry.get_sample_value("streamd_latency_seconds_sum", camera) or 0.0,
        )
        counter = registry.get_sample_value("streamd_frames_inferred_total", {"camera": "group9"})
        return int(counter or 0)

    inferred = run(scenario())

    # Every analysed frame was timed in every stage, and the stages explain its latency:
    # from the frame's decode (before its conversion) to its record, the stages after
    # decoding add up to no more than the latency, and with decoding to no less.
    assert {stage: count for stage, (count, _) in stages.items()} == dict.fromkeys(stages, float(inferred))
    mean = {stage: total / inferred for stage, (_, total) in stages.items()}
    after_decode = mean["slot"] + mean["batch"] + mean["inference"] + mean["postprocess"]
    assert mean["inference"] > 0 and mean["decode"] > 0
    assert after_decode <= mean["latency"] <= after_decode + mean["decode"] + 0.001, mean

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    records = [line for line in lines if "event" not in line]
    assert len(records) == inferred, "every inferred frame has its record after shutdown"
    # The photo's faces are tracked; every track that started ended at the stop.
    events = [line for line in lines if "event" in line]
    started = sorted(e["track"] for e in events if e["event"] == "track_started")
    assert len(started) >= 7 and started == sorted(e["track"] for e in events if e["event"] == "track_ended")
    assert len(records) >= 20
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for record in records:
        assert record["camera"] == "group9"
        assert (record["width"], record["height"]) == (1024, 768)
        assert 0 < record["latency_s"] < 5 and record["result_at"] >= record["captured_at"]
        faces = record["faces"]
        assert 7 <= len(faces) <= 9, f"frame {record['seq']}: {len(faces)} faces"
        for face in faces:
            x1, y1, x2, y2 = face["box"]
            assert 0 <= x1 < x2 <= 1024 and 0 <= y1 < y2 <= 768
        # Camera pixels: the faces sit where they are in the photo itself.
        matched = [max(box_iou(np.array(f["box"]), np.array(r["box"])) for r in reference) for f in faces]
        assert np.median(matched) >= 0.8, matched
