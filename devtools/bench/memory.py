"""`python -m devtools.bench memory`: resident memory per camera, the daemon against PyAV alone.

Real cameras: the RTSP test server serves 1080p H.264 (a keyframe a second) on loopback.

1. streamd: `streamd run` in its own process, first on a file without cameras (its
   baseline: the interpreter, the libraries, the engine after its warm-up), then with
   the file rewritten to 10 cameras and then 20, applied by reload as an operator's edit
   would be. After each step it settles, and its resident memory is read once a second
   for a while; the figure is the mean of those readings. Then the server is killed and
   restarted a few times, so that every camera reconnects, and it is read again: what a
   camera holds must not grow with its reconnects.
2. PyAV alone, in its own process: the same streams opened one thread each, every frame
   decoded, the frames sampled at the same rate letterboxed, nothing else
   (`devtools.bench.pyav_alone`); read the same way, before any stream and at 10 and 20.

`rss_mb_per_camera` = (resident at N - baseline) / N, for both, and their ratio, all
measured in the same run. The cameras' source rate is kept low (5 fps by default) so
that two cores decode 20 of them in real time: memory per camera depends on the picture
size and the decoder's reference frames, not on the frame rate.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devtools.bench.resident import resident_by_kind
from devtools.bench.streams_file import streams_yaml
from devtools.testing.demo import CACHE_DIR, DEMO_PHOTOS, shared_image
from devtools.testing.ports import free_port
from devtools.testing.rtsp import RtspTestServer
from devtools.testing.video import VideoSpec, cached_video
from streamd.base.memory import rss_bytes

TRACKING = {
    "on": "{{crops: {{directory: '{crops}'}}}}",
    "no-crops": "{{crops: {{enabled: false}}}}",
    "off": "{{enabled: false}}",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--counts", default="10,20", help="camera counts measured (default: %(default)s)")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--source-fps", type=int, default=5, help="the cameras' frame rate (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=1.0, help="analysis rate per camera (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="canonical model: the daemon also runs the engine")
    parser.add_argument(
        "--tracking",
        choices=list(TRACKING),
        default="on",
        help="tracks and best-face crops (on: the defaults), tracks without crops, or none (default: %(default)s)",
    )
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after each change before reading")
    parser.add_argument("--measure", type=float, default=10.0, help="seconds of readings, one a second")
    parser.add_argument("--reconnects", type=int, default=3, help="server restarts at the end (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where memory.json goes")


@dataclass
class Resident:
    """A process's resident memory at one step: the mean of the readings, and by kind."""

    total: int
    by_kind: dict[str, int]


def settled_resident(pid: int | None, settle_s: float, measure_s: float) -> Resident:
    time.sleep(settle_s)
    readings = []
    for _ in range(max(1, int(measure_s))):
        readings.append(rss_bytes(pid) or 0)
        time.sleep(1.0)
    return Resident(round(sum(readings) / len(readings)), resident_by_kind(pid))


def _status(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as response:
        cameras: list[dict[str, Any]] = json.loads(response.read())["cameras"]
    return cameras


def _restart_and_wait_for_reconnects(server: RtspTestServer, port: int, timeout: float = 180.0) -> None:
    """Kill the server as a crashed camera server goes, start it again on the same port,
    and wait until every camera has reconnected and streams again."""
    before = {camera["id"]: camera["reconnects"] for camera in _status(port)}
    server.kill()
    time.sleep(2.0)
    server.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cameras = _status(port)
        if all(c["state"] == "streaming" and c["reconnects"] > before[c["id"]] for c in cameras):
            return
        time.sleep(1.0)
    raise RuntimeError(f"the cameras did not all reconnect within {timeout:.0f}s of a restart")


def _streamd(
    server: RtspTestServer, counts: list[int], args: argparse.Namespace, work: Path
) -> tuple[dict[int, Resident], Resident | None]:
    """Resident memory at each camera count, and after the reconnects at the last count."""
    urls = {name: server.url(name) for name in server.mounts}
    config, records, port = work / "streams.yaml", work / "detections.jsonl", free_port()
    config.write_text(
        streams_yaml({}, port, records, args.fps, args.model, TRACKING[args.tracking].format(crops=work / "crops"))
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "streamd", "--log-level", "WARNING", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names = list(urls)
    try:
        resident = {0: settled_resident(process.pid, args.settle, args.measure)}
        for count in counts:
            edited = work / "streams.yaml.new"
            edited.write_text(
                streams_yaml(
                    {n: urls[n] for n in names[:count]},
                    port,
                    records,
                    args.fps,
                    args.model,
                    TRACKING[args.tracking].format(crops=work / "crops"),
                )
            )
            edited.replace(config)  # a whole file at once, as editors save
            resident[count] = settled_resident(process.pid, args.settle, args.measure)
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode}")
        for round_ in range(1, args.reconnects + 1):
            _restart_and_wait_for_reconnects(server, port)
            resident_mb = (rss_bytes(process.pid) or 0) / 2**20
            threads = len(list(Path(f"/proc/{process.pid}/task").iterdir()))
            print(f"  after restart {round_}: {resident_mb:.0f} MB resident, {threads} threads", flush=True)
        reconnected = settled_resident(process.pid, args.settle, args.measure) if args.reconnects else None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return resident, reconnected


def _pyav_alone(urls: dict[str, str], counts: list[int], args: argparse.Namespace) -> dict[int, Resident]:
    command = [sys.executable, "-X", "faulthandler", "-m", "devtools.bench.pyav_alone", "--fps", str(args.fps)]
    command += ["--counts", ",".join(map(str, counts)), "--settle", str(args.settle), "--measure", str(args.measure)]
    done = subprocess.run([*command, *urls.values()], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"PyAV alone exited with {done.returncode}:\n{done.stderr[-4000:]}")
    readings = (json.loads(line) for line in done.stdout.splitlines())
    return {reading["cameras"]: Resident(reading["total"], reading["by_kind"]) for reading in readings}


def _per_camera_mb(resident: dict[int, Resident], count: int) -> float:
    return (resident[count].total - resident[0].total) / count / 2**20


def _per_camera_by_kind(resident: dict[int, Resident], count: int) -> dict[str, float]:
    before, after = resident[0].by_kind, resident[count].by_kind
    return {kind: (after[kind] - before.get(kind, 0)) / count / 2**20 for kind in sorted(after)}


def main(args: argparse.Namespace) -> int:
    counts = sorted(int(c) for c in args.counts.split(","))
    image = shared_image(DEMO_PHOTOS[0])
    spec = VideoSpec(
        width=args.width, height=args.height, fps=args.source_fps, seconds=20, image=str(image) if image else None
    )
    video = cached_video(spec, CACHE_DIR)
    engine = f"with the engine ({args.model.name})" if args.model else "ingest only (no engine)"
    print(f"clip: {video.name}; {max(counts)} cameras at most, analysed at {args.fps:g} fps; streamd {engine}")
    with RtspTestServer({f"cam{i + 1:02d}": video for i in range(max(counts))}) as server:
        with tempfile.TemporaryDirectory(prefix="streamd-memory-") as work:
            ours, reconnected = _streamd(server, counts, args, Path(work))
        floor = _pyav_alone({name: server.url(name) for name in server.mounts}, counts, args)
    figures: dict[str, Any] = {}
    top = max(counts)
    for name, resident in (("streamd", ours), ("pyav_alone", floor)):
        steps = ", ".join(
            f"{count} cameras {resident[count].total / 2**20:.0f} MB ({_per_camera_mb(resident, count):.1f} MB each)"
            for count in counts
        )
        kinds = ", ".join(f"{kind} {mb:+.1f}" for kind, mb in _per_camera_by_kind(resident, top).items())
        print(f"{name}: baseline {resident[0].total / 2**20:.0f} MB; {steps}; per camera at {top}, MB: {kinds}")
        figures[name] = {
            "resident": {count: asdict(step) for count, step in resident.items()},
            "mb_per_camera": {count: _per_camera_mb(resident, count) for count in counts},
            "mb_per_camera_by_kind": _per_camera_by_kind(resident, top),
        }
    if reconnected is not None:
        growth = (reconnected.total - ours[top].total) / top / 2**20
        print(
            f"streamd after {args.reconnects} reconnects of every camera: {reconnected.total / 2**20:.0f} MB "
            f"({growth:+.1f} MB per camera)"
        )
        figures["streamd"]["after_reconnects"] = {"reconnects": args.reconnects, **asdict(reconnected)}
    ours_mb, floor_mb = _per_camera_mb(ours, top), _per_camera_mb(floor, top)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(figures, indent=2))
    print(f"rss_mb_per_camera={ours_mb:.1f} pyav_alone_mb_per_camera={floor_mb:.1f} ratio={ours_mb / floor_mb:.2f}")
    return 0
