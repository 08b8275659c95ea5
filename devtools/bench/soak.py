"""`python -m devtools.bench soak` (`make soak`): N real cameras through a real daemon for M minutes.

The RTSP test server serves N cameras (a 640x480 H.264 pan at 25 fps) on loopback; the
daemon is `streamd run` in its own process, as operators run it, with the model, a
JSON Lines sink and its metrics listener. Every minute it prints the daemon's resident
memory, its open files, and the frames inferred and dropped so far (from its own
`/metrics`). At the end it stops the daemon with SIGTERM and checks what a soak is for:
exit code 0, and as many records in the file as frames the daemon says it inferred.

A leak shows as memory or open files that keep rising minute after minute; the summary
gives the rise from the first full minute to the last.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devtools.bench.streams_file import streams_yaml
from devtools.testing.demo import CACHE_DIR, DEMO_PHOTOS, shared_image
from devtools.testing.ports import free_port
from devtools.testing.rtsp import RtspTestServer
from devtools.testing.video import VideoSpec, cached_video
from streamd.base.memory import rss_bytes

_INFERRED_AT_STOP = re.compile(r"detector stopped: (\d+) frames inferred")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", type=int, default=12, help="RTSP cameras (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=2.0, help="analysis rate per camera (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=Path("engines/yolov5n-0.5.onnx"), help="canonical model")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where soak.json goes")


@dataclass
class Sample:
    minute: float
    rss_mb: float
    open_files: int
    inferred: int
    dropped: int

    def line(self, before: Sample | None) -> str:
        inferred_rise = self.inferred - (before.inferred if before else 0)
        dropped_rise = self.dropped - (before.dropped if before else 0)
        return (
            f"minute {self.minute:5.1f}: rss {self.rss_mb:7.1f} MB, open files {self.open_files:4d}, "
            f"inferred {self.inferred:8d} (+{inferred_rise}), dropped {self.dropped:6d} (+{dropped_rise})"
        )


def _sample(pid: int, port: int, minute: float) -> Sample:
    rss_mb = (rss_bytes(pid) or 0) / 2**20
    open_files = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals = {"streamd_frames_inferred": 0.0, "streamd_frames_dropped": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name in totals:
            totals[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    inferred, dropped = (int(totals[name]) for name in ("streamd_frames_inferred", "streamd_frames_dropped"))
    return Sample(minute, rss_mb, open_files, inferred, dropped)


def _wait_ready(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {process.returncode} while starting")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the daemon was not ready within {timeout:.0f}s")


def main(args: argparse.Namespace) -> int:
    if not args.model.is_file():
        print(f"soak: no model at {args.model} (`make soak` prepares it; or `streamd model prepare`)", file=sys.stderr)
        return 2
    image = shared_image(DEMO_PHOTOS[0])
    video = cached_video(
        VideoSpec(width=640, height=480, fps=25, seconds=20, image=str(image) if image else None), CACHE_DIR
    )
    samples: list[Sample] = []
    mounts = {f"cam{i + 1:02d}": video for i in range(args.cameras)}
    with RtspTestServer(mounts) as server, tempfile.TemporaryDirectory(prefix="streamd-soak-") as work:
        port = free_port()
        records = Path(work) / "detections.jsonl"
        config = Path(work) / "streams.yaml"
        urls = {name: server.url(name) for name in server.mounts}
        config.write_text(streams_yaml(urls, port, records, args.fps, args.model))
        log = Path(work) / "daemon.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamd", "--log-format", "text", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
            try:
                _wait_ready(process, port, timeout=180)
                print(
                    f"soak: {args.cameras} cameras at {args.fps:g} fps for {args.minutes:g} minutes, pid {process.pid}"
                )
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < args.minutes * 60:
                    time.sleep(min(args.every, args.minutes * 60 - elapsed))
                    if process.poll() is not None:
                        raise RuntimeError(f"the daemon exited with {process.returncode} during the soak")
                    sample = _sample(process.pid, port, (time.monotonic() - started) / 60)
                    print(sample.line(samples[-1] if samples else None), flush=True)
                    samples.append(sample)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    exit_code = process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    exit_code = process.wait()
        stderr = log.read_text(errors="replace")
        said = _INFERRED_AT_STOP.search(stderr)
        inferred = int(said.group(1)) if said else -1
        with records.open("rb") as lines:
            written = sum(1 for _ in lines)
    return _summarise(args, samples, exit_code, inferred, written, stderr)


def _summarise(
    args: argparse.Namespace, samples: list[Sample], exit_code: int, inferred: int, written: int, stderr: str
) -> int:
    ok = exit_code == 0 and inferred == written and inferred > 0
    first, last = (samples[0], samples[-1]) if samples else (None, None)
    if first is not None and last is not None:
        print(
            f"rise from minute {first.minute:.0f} to {last.minute:.0f}: rss {last.rss_mb - first.rss_mb:+.1f} MB, "
            f"open files {last.open_files - first.open_files:+d}"
        )
    print(f"exit code {exit_code}, frames inferred {inferred}, records written {written}: {'OK' if ok else 'FAIL'}")
    if not ok:
        print(stderr[-3000:], file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {
        "cameras": args.cameras,
        "fps": args.fps,
        "minutes": args.minutes,
        "samples": [asdict(sample) for sample in samples],
        "exit_code": exit_code,
        "inferred": inferred,
        "records": written,
    }
    (args.out / "soak.json").write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1
