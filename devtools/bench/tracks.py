"""`python -m devtools.bench tracks`: tracking on clips of moving faces with ground truth.

The clips (`devtools.testing.moving_faces`: faces from the shared photos crossing,
passing, entering and leaving at 50 to 300 px/s) are decoded and sampled at the
analysis rate (5 fps), each sampled frame goes through the real letterbox, the model
(ONNX Runtime) and postprocess once, and then every tracker variant runs on the same
detections through streamd's own tracking stage (`streamd.tracks`: ids, confirmation,
events), so only the association differs. Per variant: ID switches per face, the share
of each face's frames under its dominant id, the faces with exactly one started and
one ended event, stray tracks, and the tracking stage's CPU time per face.

Variants: ByteTrack, OC-SORT and SORT from the `trackers` library, each matching
boxes as they are and grown about their centres. The product's choice is the first
line (`streamd`). Its last line: `switches_per_face=X coverage=Y exact_events=Z us_per_face=W`.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

import streamd.tracks.tracker as tracker_module
from devtools.bench.models import bench_model
from devtools.testing.moving_faces import SCENES, Scene, face_patches, make_clip
from devtools.testing.track_score import TrackScore, score
from streamd.analysis.postprocess import PostprocessSettings, postprocess
from streamd.config.schema import TrackingConfig
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
from streamd.frames.frame import Frame
from streamd.frames.letterbox import letterbox
from streamd.metrics.registry import Metrics
from streamd.tracks.tracking import Tracking

Record = dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="source or canonical model (default: the shared one)")
    parser.add_argument("--fps", type=float, default=5.0, help="analysis rate (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="figures and clips")
    parser.add_argument("--faces", action="store_true", help="print each face's track ids frame by frame")


@dataclass
class Analysed:
    frame: Frame
    faces: list[Record]


def _detections(scene: Scene, clip: Path, model: Path, fps: float) -> list[Analysed]:
    engine = OnnxRuntimeEngine(model, 1)
    step = max(1, round(scene.fps / fps))
    analysed: list[Analysed] = []
    with av.open(str(clip)) as container:
        for index, picture in enumerate(container.decode(video=0)):
            if index % step:
                continue
            image, box = letterbox(picture, engine.input_width, engine.input_height)
            rows = engine.infer(image[None])[0]
            faces = postprocess(rows, box, PostprocessSettings()).as_records()
            t = index / scene.fps
            frame = Frame(scene.name, len(analysed), t, t, 1000.0 + t, picture.width, picture.height, image, box)
            analysed.append(Analysed(frame, faces))
    engine.close()
    return analysed


Association = Callable[[TrackingConfig], Any]


def _variants() -> dict[str, tuple[Association, float]]:
    from trackers import OCSORTTracker, SORTTracker

    def ocsort(settings: TrackingConfig) -> Any:
        return OCSORTTracker(
            lost_track_buffer=max(1, round(settings.lost_after_s * 30)),
            minimum_consecutive_frames=settings.min_hits,
            minimum_iou_threshold=settings.min_iou,
        )

    def sort(settings: TrackingConfig) -> Any:
        return SORTTracker(
            lost_track_buffer=max(1, round(settings.lost_after_s * 30)),
            track_activation_threshold=0.0,
            minimum_consecutive_frames=settings.min_hits,
            minimum_iou_threshold=settings.min_iou,
        )

    bytetrack: Association = tracker_module.association
    return {
        "streamd": (bytetrack, tracker_module.MATCH_GROWTH),
        "bytetrack iou": (bytetrack, 1.0),
        "bytetrack 3x": (bytetrack, 3.0),
        "bytetrack 4x": (bytetrack, 4.0),
        "ocsort iou": (ocsort, 1.0),
        "ocsort 2x": (ocsort, 2.0),
        "sort iou": (sort, 1.0),
        "sort 2x": (sort, 2.0),
    }


def _track(analysed: list[Analysed]) -> tuple[list[Record], list[Record], float, int]:
    """Run streamd's tracking stage over the detections: frame records, events, CPU s, faces."""
    events: list[Record] = []
    settings = TrackingConfig.model_validate({"crops": {"enabled": False, "directory": "/nonexistent"}})
    tracking = Tracking(settings, events.extend, Metrics())
    camera = analysed[0].frame.camera_id
    tracking.attach(camera)
    records, cpu, faces = [], 0.0, 0
    for item in analysed:
        found = copy.deepcopy(item.faces)
        start = time.process_time()
        events += tracking.observe([(item.frame, found)])
        cpu += time.process_time() - start
        faces += len(found)
        records.append({"camera": camera, "frame_pts": item.frame.pts, "faces": found})
    tracking.stop(5.0)
    return records, events, cpu, faces


def main(args: argparse.Namespace) -> int:
    model = bench_model("tracks", args.model, args.out)
    if model is None:
        return 2
    patches = face_patches(model)
    detections = {}
    for scene in SCENES:
        clip = make_clip(scene, patches, args.out / f"tracks-{scene.name}.mkv")
        detections[scene.name] = (scene, _detections(scene, clip, model, args.fps))
    results: dict[str, dict[str, float]] = {}
    original: tuple[Association, float] = (tracker_module.association, tracker_module.MATCH_GROWTH)
    print(
        f"{'variant':<16} {'faces':>5} {'switches/face':>13} {'coverage':>8} {'exact events':>12} "
        f"{'stray':>5} {'us/face':>8}"
    )
    try:
        for name, (association, growth) in _variants().items():
            # The module's own names, swapped: each variant runs through the product's stage.
            vars(tracker_module).update(association=association, MATCH_GROWTH=growth)
            scores: list[TrackScore] = []
            cpu, faces = 0.0, 0
            for scene, analysed in detections.values():
                records, events, spent, seen = _track(analysed)
                scores.append(score(scene, records, events))
                cpu, faces = cpu + spent, faces + seen
            if name == "streamd" and args.faces:
                for scene_score, (scene, _) in zip(scores, detections.values(), strict=True):
                    for face in scene_score.faces:
                        print(
                            f"  {scene.name} walker {face.walker}: {face.frames} frames, ids {face.ids}, "
                            f"started {face.started} ended {face.ended}"
                        )
            merged = TrackScore([face for s in scores for face in s.faces], sum(s.stray_tracks for s in scores))
            figures = {
                "faces": len(merged.faces),
                "switches_per_face": round(merged.switches_per_face, 3),
                "coverage": round(merged.coverage, 3),
                "exact_events": round(merged.exact_events, 3),
                "stray_tracks": merged.stray_tracks,
                "us_per_face": round(cpu / max(1, faces) * 1e6, 1),
            }
            results[name] = figures
            print(
                f"{name:<16} {figures['faces']:>5} {figures['switches_per_face']:>13.2f} {figures['coverage']:>8.3f} "
                f"{figures['exact_events']:>12.2f} {figures['stray_tracks']:>5} {figures['us_per_face']:>8.1f}"
            )
    finally:
        vars(tracker_module).update(association=original[0], MATCH_GROWTH=original[1])
    (args.out / "bench-tracks.json").write_text(json.dumps(results, indent=2))
    ours = results["streamd"]
    print(
        f"switches_per_face={ours['switches_per_face']} coverage={ours['coverage']} "
        f"exact_events={ours['exact_events']} us_per_face={ours['us_per_face']}"
    )
    return 0
