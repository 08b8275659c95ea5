"""`streamd bench`: ingest figures measured in one run, reported as ratios.

1. The raw limit: PyAV decoding the test clip from a file on one thread, as fast as it
   goes: frames per second per core, and CPU seconds per frame.
2. streamd: N cameras served at their real rate by the RTSP test server on loopback,
   ingested by the daemon (frames taken by the discarding consumer). Per camera: the
   sampled rate against the configured one, and streamd's CPU seconds per decoded
   frame against the raw decoder's.

The server runs in its own process, so the CPU time measured here is streamd's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import av

from streamd.config import StreamsConfig
from streamd.consumers import DiscardingConsumer
from streamd.daemon import Daemon
from streamd.testing.demo import CACHE_DIR, DEMO_PHOTOS, shared_image
from streamd.testing.rtsp import RtspTestServer
from streamd.testing.video import VideoSpec, cached_video


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


async def _ingest(server: RtspTestServer, args: argparse.Namespace) -> dict[str, object]:
    config = StreamsConfig.model_validate(
        {
            "defaults": {"fps": args.fps},
            "cameras": [{"id": name, "url": server.url(name)} for name in server.mounts],
        }
    )
    consumer = DiscardingConsumer()
    daemon = Daemon(config, consumer=consumer, metrics_port=0, rate_log_interval_s=3600)
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
                "state": source.state,
                "decoded_fps": decoded / wall,
                "sampled_fps": sampled / wall,
                "sampled_error": sampled / wall / args.fps - 1.0,
                "dropped": source.metrics.replaced - replaced0,
            }
    finally:
        await daemon.stop()
    return {
        "cameras": cameras,
        "cpu_cores_used": cpu / wall,
        "cpu_s_per_decoded_frame": cpu / max(total_decoded, 1),
        "decoded_fps_total": total_decoded / wall,
    }


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
        ingest = asyncio.run(_ingest(server, args))

    cameras: dict[str, dict[str, float]] = ingest["cameras"]  # type: ignore[assignment]
    for name, figures in cameras.items():
        print(
            f"  {name}: {figures['state']}, decoded {figures['decoded_fps']:.2f} fps, sampled "
            f"{figures['sampled_fps']:.2f} fps (target {args.fps:g}, error {figures['sampled_error'] * 100:+.1f}%), "
            f"dropped {figures['dropped']}"
        )
    worst = max(abs(f["sampled_error"]) for f in cameras.values())
    overhead = float(ingest["cpu_s_per_decoded_frame"]) / raw["cpu_s_per_frame"]  # type: ignore[arg-type]
    print(
        f"streamd: {args.cameras} cameras, {ingest['decoded_fps_total']:.1f} decoded frames/s on "
        f"{ingest['cpu_cores_used']:.2f} cores ({float(ingest['cpu_s_per_decoded_frame']) * 1000:.2f} ms CPU/frame)"  # type: ignore[arg-type]
    )
    print(f"cpu_per_frame_vs_raw={overhead:.2f} worst_sampled_rate_error={worst * 100:.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"raw": raw, "ingest": ingest, "cpu_per_frame_vs_raw": overhead}, indent=2))
    return 0
