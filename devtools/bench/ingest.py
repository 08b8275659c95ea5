"""`python -m devtools.bench ingest`: ingest figures measured in one run, reported as ratios.

1. The raw limit: PyAV decoding the test clip from a file on one thread, as fast as it
   goes: frames per second per core, and CPU seconds per frame.
2. streamd: N cameras served at their real rate by the RTSP test server on loopback,
   ingested by the daemon (frames taken by the discarding consumer). Per camera: the
   sampled rate against the configured one, and streamd's CPU seconds per decoded
   frame against the raw decoder's.
3. `decode_frames`: the same cameras analysed at 1 fps, decoding every frame and then
   keyframes only (the clip has a keyframe a second): streamd's CPU per camera for
   each, as a ratio; and the clip decoded both ways, the analysed pictures compared
   (the same bytes give the same faces).

The server runs in its own process, so the CPU time measured here is streamd's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from devtools.testing.decode import decode_as_live
from devtools.testing.demo import CACHE_DIR, DEMO_PHOTOS, shared_image
from devtools.testing.rtsp import RtspTestServer
from devtools.testing.video import VideoSpec, cached_video
from streamd.analysis.discard import DiscardingConsumer
from streamd.config.loader import LoadedConfig
from streamd.config.schema import CameraConfig, DecodeFrames, StreamsConfig
from streamd.frames.letterbox import letterbox
from streamd.service.daemon import Daemon, DaemonOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", type=int, default=3, help="RTSP cameras to ingest (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default: %(default)s)")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--source-fps", type=int, default=25, help="the cameras' frame rate")
    parser.add_argument("--fps", type=float, default=5.0, help="analysis rate per camera")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")


def raw_decode(path: Path, max_frames: int = 500) -> dict[str, float]:
    """Decode `path` on one thread as fast as possible: the per-core limit."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in container.decode(stream):
            frames += 1
            if frames >= max_frames:
                break
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"frames": frames, "fps_per_core": frames / cpu, "cpu_s_per_frame": cpu / frames, "wall_fps": frames / wall}


@dataclass
class IngestFigures:
    cameras: dict[str, dict[str, Any]]
    """Per camera: state, decoded_fps, sampled_fps, sampled_error, dropped."""
    cpu_cores_used: float
    cpu_s_per_decoded_frame: float
    decoded_fps_total: float

    @property
    def cpu_cores_per_camera(self) -> float:
        return self.cpu_cores_used / max(1, len(self.cameras))


async def _ingest(
    server: RtspTestServer, args: argparse.Namespace, fps: float, decode_frames: DecodeFrames = DecodeFrames.auto
) -> IngestFigures:
    config = StreamsConfig.model_validate(
        {
            "defaults": {"fps": fps, "decode_frames": decode_frames},
            "cameras": [{"id": name, "url": server.url(name)} for name in server.mounts],
        }
    )
    consumer = DiscardingConsumer()
    daemon = Daemon(LoadedConfig(config), DaemonOptions(consumer=consumer, metrics_port=0, rate_log_interval_s=3600))
    await daemon.start()
    try:
        await asyncio.sleep(args.warmup)
        sources = daemon.sources()
        before = {s.camera_id: (s.metrics.decoded, s.metrics.sampled, s.metrics.replaced) for s in sources}
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(args.seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        cameras = {}
        total_decoded = 0
        for source in sources:
            decoded0, sampled0, replaced0 = before[source.camera_id]
            decoded = source.metrics.decoded - decoded0
            sampled = source.metrics.sampled - sampled0
            total_decoded += decoded
            cameras[source.camera_id] = {
                "state": source.state.value,
                "decoded_fps": decoded / wall,
                "sampled_fps": sampled / wall,
                "sampled_error": sampled / wall / fps - 1.0,
                "dropped": source.metrics.replaced - replaced0,
            }
    finally:
        await daemon.stop()
    return IngestFigures(cameras, cpu / wall, cpu / max(total_decoded, 1), total_decoded / wall)


def main(args: argparse.Namespace) -> int:
    image = shared_image(DEMO_PHOTOS[0])
    spec = VideoSpec(
        width=args.width, height=args.height, fps=args.source_fps, seconds=20, image=str(image) if image else None
    )
    video = cached_video(spec, CACHE_DIR)
    print(f"clip: {video.name} ({args.width}x{args.height} H.264 at {args.source_fps} fps)")

    raw = raw_decode(video)
    print(
        f"raw PyAV decode, one thread: {raw['fps_per_core']:.1f} frames/s per core "
        f"({raw['cpu_s_per_frame'] * 1000:.2f} ms CPU/frame)"
    )

    mounts = {f"cam{i + 1}": video for i in range(args.cameras)}
    with RtspTestServer(mounts) as server:
        ingest = asyncio.run(_ingest(server, args, args.fps))
        every = asyncio.run(_ingest(server, args, 1.0, DecodeFrames.all))
        keyframes = asyncio.run(_ingest(server, args, 1.0, DecodeFrames.keyframes))

    for name, figures in ingest.cameras.items():
        print(
            f"  {name}: {figures['state']}, decoded {figures['decoded_fps']:.2f} fps, sampled "
            f"{figures['sampled_fps']:.2f} fps (target {args.fps:g}, error {figures['sampled_error'] * 100:+.1f}%), "
            f"dropped {figures['dropped']}"
        )
    worst = max(abs(f["sampled_error"]) for f in ingest.cameras.values())
    overhead = ingest.cpu_s_per_decoded_frame / raw["cpu_s_per_frame"]
    print(
        f"streamd: {args.cameras} cameras, {ingest.decoded_fps_total:.1f} decoded frames/s on "
        f"{ingest.cpu_cores_used:.2f} cores ({ingest.cpu_s_per_decoded_frame * 1000:.2f} ms CPU/frame)"
    )
    print(f"cpu_per_frame_vs_raw={overhead:.2f} worst_sampled_rate_error={worst * 100:.1f}%")
    keyframe_ratio = _report_keyframes(video, every, keyframes)
    if args.json:
        figures = {
            "raw": raw,
            "ingest": asdict(ingest),
            "cpu_per_frame_vs_raw": overhead,
            "at_1fps": {"all": asdict(every), "keyframes": asdict(keyframes), "cpu_keyframes_vs_all": keyframe_ratio},
        }
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _report_keyframes(video: Path, every: IngestFigures, keyframes: IngestFigures) -> float:
    """Print the 1 fps comparison; returns keyframes' CPU per camera against all's."""
    for name, figures in (("all", every), ("keyframes", keyframes)):
        sampled = [camera["sampled_fps"] for camera in figures.cameras.values()]
        print(
            f"at 1 fps, decode_frames {name}: {figures.cpu_cores_per_camera * 100:.1f}% of a core per camera, "
            f"{figures.decoded_fps_total:.1f} decoded frames/s, sampled {min(sampled):.2f}..{max(sampled):.2f} fps "
            "per camera"
        )
    ratio = keyframes.cpu_cores_per_camera / every.cpu_cores_per_camera
    same, compared = _same_pictures(video)
    print(f"analysed pictures identical, keyframes against all: {same} of {compared}")
    print(f"cpu_per_camera_keyframes_vs_all={ratio:.2f}")
    return ratio


def _same_pictures(video: Path) -> tuple[int, int]:
    """The clip decoded whole and keyframes only at 1 fps: analysed pictures equal, of compared."""

    def analysed(mode: DecodeFrames) -> dict[float, np.ndarray]:
        camera = CameraConfig(id="clip", url="rtsp://127.0.0.1/clip", fps=1.0, decode="cpu", decode_frames=mode)
        frames = decode_as_live(video, camera, lambda frame: letterbox(frame, 640, 640))[0]
        return {frame.pts: frame.image for frame in frames}

    every, keyframes = analysed(DecodeFrames.all), analysed(DecodeFrames.keyframes)
    same = sum(1 for pts, image in keyframes.items() if pts in every and np.array_equal(image, every[pts]))
    return same, max(len(every), len(keyframes))
