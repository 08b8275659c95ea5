"""`python -m devtools.bench recognition`: the second stage's throughput and latency,
faces from many cameras in batches against one face at a time, in the same run.

The faces are the shared photos' (cut as the daemon cuts a tracked face, at the photos'
resolution), dealt round-robin to `--cameras` cameras. Each mode embeds every face
`--rounds` times: `one at a time` calls the embedder per face, as per-camera code would;
`batched` hands the real stage (`streamd.recognition.stage`) every camera's faces at once
and lets it batch them (max batch, max delay, cameras taking turns). Reported: faces/s,
the p50 and p99 of queue-to-identity latency, and the ratio of the throughputs. The
last line: `batched_faces_per_s=X one_at_a_time_faces_per_s=Y ratio=Z`.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from devtools.bench.models import bench_model
from devtools.testing.demo import ASSETS
from streamd.analysis.postprocess import PostprocessSettings
from streamd.analysis.still_images import detect_images
from streamd.frames.face_crop import FaceCrop, crop_from_picture
from streamd.frames.letterbox import load_image
from streamd.metrics.registry import Metrics
from streamd.recognition.embedders import make_embedder
from streamd.recognition.gallery import Gallery
from streamd.recognition.stage import Recognition

PHOTOS = ("group9.jpg", "two_people.jpg", "street_bus.jpg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="source or canonical detector (default: the shared one)")
    parser.add_argument("--embedder", default="dlib", choices=["dlib", "onnx"], help="(default: %(default)s)")
    parser.add_argument("--embedder-model", type=Path, help="the ONNX embedder's file (for --embedder onnx)")
    parser.add_argument("--cameras", type=int, default=20, help="cameras the faces come from (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="times every face is embedded (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=16, help="the stage's max batch (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))


def _faces(model: Path) -> list[FaceCrop]:
    crops = []
    paths = [str(ASSETS / "images" / name) for name in PHOTOS]
    for record in detect_images(paths, model, PostprocessSettings(score_threshold=0.5)):
        picture = load_image(record["image"])
        crops += [crop_from_picture(picture, f["box"], f["landmarks"], 0.25) for f in record["faces"]]
    return crops


def main(args: argparse.Namespace) -> int:
    model = bench_model("recognition", args.model, args.out)
    if model is None:
        return 2
    faces = _faces(model)
    embedder = make_embedder(args.embedder, args.embedder_model)
    embedder.embed(faces[:1])  # warm
    work = [(f"cam{index % args.cameras:02d}", face) for index, face in enumerate(faces * args.rounds)]
    print(f"{len(faces)} faces from {len(PHOTOS)} photos, {len(work)} crops over {args.cameras} cameras")

    start = time.perf_counter()
    latencies = []
    for _, face in work:
        asked = time.perf_counter()
        embedder.embed([face])
        latencies.append(time.perf_counter() - asked)
    alone = len(work) / (time.perf_counter() - start)
    _line("one at a time", alone, latencies)

    done = threading.Event()
    answered: list[Any] = []
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as folder:
        gallery = Gallery(Path(folder) / "gallery.json", embedder.name)

        def ended(event: dict[str, Any], _crop: FaceCrop | None) -> None:
            answered.append(event)
            if len(answered) == len(work):
                done.set()

        stage = Recognition(embedder, gallery, embedder.threshold, lambda _: None, ended, metrics, args.max_batch)
        stage.start()
        start = time.perf_counter()
        for track, (camera, face) in enumerate(work):
            stage.end({"camera": camera, "track": track}, face)
        done.wait()
        batched = len(work) / (time.perf_counter() - start)
        stage.stop(5)
    registry = metrics.registry
    count = registry.get_sample_value("streamd_recognition_seconds_count") or 1.0
    total = registry.get_sample_value("streamd_recognition_seconds_sum") or 0.0
    batches = registry.get_sample_value("streamd_recognition_batch_size_count") or 1.0
    mean_batch = (registry.get_sample_value("streamd_recognition_batch_size_sum") or 0.0) / batches
    print(
        f"batched: {batched:.1f} faces/s, mean latency {total / max(1.0, count) * 1000:.0f} ms "
        f"(all queued at once), mean batch {mean_batch:.1f}"
    )
    print(f"batched_faces_per_s={batched:.1f} one_at_a_time_faces_per_s={alone:.1f} ratio={batched / alone:.2f}")
    return 0


def _line(mode: str, rate: float, latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{mode}: {rate:.1f} faces/s, latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
